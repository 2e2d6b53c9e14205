-- validations and command_acks grow by one row per gate decision / acknowledgement: partition them by time
-- (RANGE on "at"), so old months are dropped whole (partitions.retention_days) instead of deleted row by row,
-- and a report of one period reads only that period's partitions. docs/reports.md explains the choices.
--
-- Each table is converted in place, in this migration's one transaction, without losing a row and keeping
-- every column, default and check that earlier migrations gave it (LIKE ... INCLUDING), and every index
-- (re-created from the old table's own definitions). The primary key gains "at": PostgreSQL requires the
-- partition key in every unique constraint of a partitioned table. Exactly-once per (device, request) does
-- not rest on that key: every gate batch locks its park's row before it looks for a retried request's first
-- decision, so two decisions for one request can never be written (docs/reports.md).
--
-- Partitions: one per month for the months that hold rows and the next three; a DEFAULT partition catches
-- anything else (a clock far off), so a decision is never refused for want of a partition. The server's
-- maintenance job (services/partitions.py) makes later partitions ahead and drops expired ones.

CREATE FUNCTION parkgate_partition_by_month(p_table text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    old_name text := p_table || '_unpartitioned';
    pkey text;
    pkey_columns text;
    index_defs text[];
    def text;
    m timestamptz;
    p_months timestamptz[];
BEGIN
    -- The (UTC) months that hold rows, and this month and the next two.
    EXECUTE format($q$SELECT ARRAY(
        SELECT DISTINCT date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' FROM %I
        UNION SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => n)) AT TIME ZONE 'UTC'
              FROM generate_series(0, 2) AS n ORDER BY 1)$q$, p_table) INTO p_months;
    SELECT c.conname, pg_get_constraintdef(c.oid) INTO pkey, pkey_columns
      FROM pg_constraint c WHERE c.conrelid = p_table::regclass AND c.contype = 'p';
    SELECT coalesce(array_agg(pg_get_indexdef(i.indexrelid)), '{}') INTO index_defs
      FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
     WHERE i.indrelid = p_table::regclass AND ic.relname <> pkey;

    EXECUTE format('ALTER TABLE %I RENAME TO %I', p_table, old_name);
    EXECUTE format('ALTER TABLE %I RENAME CONSTRAINT %I TO %I', old_name, pkey, pkey || '_unpartitioned');
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED '
                   'INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE (at)',
                   p_table, old_name);
    -- the old key's columns, plus "at" (PRIMARY KEY (a, b) -> PRIMARY KEY (a, b, at))
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I %s', p_table, pkey,
                   regexp_replace(pkey_columns, '\)$', ', at)'));
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', p_table || '_default', p_table);
    FOREACH m IN ARRAY p_months LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       p_table || '_p' || to_char(m AT TIME ZONE 'UTC', 'YYYYMMDD'), p_table,
                       m, (m AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC');
    END LOOP;
    EXECUTE format('INSERT INTO %I SELECT * FROM %I', p_table, old_name);
    EXECUTE format('DROP TABLE %I', old_name);
    -- The old indexes, now on the partitioned table (and so on every partition). A unique one without "at"
    -- cannot exist on a partitioned table: it is kept as a plain index, and said so.
    FOREACH def IN ARRAY index_defs LOOP
        def := replace(def, ' ON ' || quote_ident(current_schema()) || '.' || quote_ident(old_name) || ' ',
                       ' ON ' || quote_ident(p_table) || ' ');
        def := replace(def, ' ON ' || quote_ident(old_name) || ' ', ' ON ' || quote_ident(p_table) || ' ');
        BEGIN
            EXECUTE def;
        EXCEPTION WHEN invalid_table_definition OR feature_not_supported THEN
            RAISE NOTICE 'partitioning %: % kept as a non-unique index', p_table, def;
            EXECUTE replace(def, 'CREATE UNIQUE INDEX', 'CREATE INDEX');
        END;
    END LOOP;
END $$;

SELECT parkgate_partition_by_month('validations');
SELECT parkgate_partition_by_month('command_acks');

DROP FUNCTION parkgate_partition_by_month(text);

-- A retried request is found by (device, request) alone: the leading columns of the new primary key, so each
-- partition's key index answers it.
