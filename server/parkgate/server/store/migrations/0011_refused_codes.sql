-- Gates refuse refunded and voided tickets offline too: their serials go to the gates with the revoked codes
-- (welcome and UPDATE_KEYS) until the ticket expires. This index keeps that list a short read however many
-- tickets the park has sold: only tickets that are no longer valid are in it.
CREATE INDEX tickets_refused_until ON tickets (valid_until) INCLUDE (serial) WHERE state <> 'valid';
