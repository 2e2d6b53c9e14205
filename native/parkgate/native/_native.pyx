# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The native ticket-code core: Base45 decode, Ed25519 verify and gate rules in C.

Same steps, same order, same answers as _pure.py (docs/ticket-code.md). What
makes it fast is not the crypto (libsodium is libsodium) but everything around
it: the text is read in place from the str/bytes object, decoded into a
fixed C struct, and a whole chunk of codes is decoded, verified and checked
inside one ``with nogil`` block, so per-code Python work is one small tuple
for the result and two threads use two cores.
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE


cdef extern from "Python.h":
    int PyUnicode_READY(object) except -1
    bint PyUnicode_IS_ASCII(object)
    void* PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)


cdef extern from "sodium.h" nogil:
    int sodium_init()
    const char* sodium_version_string()
    int crypto_sign_verify_detached(const unsigned char *sig, const unsigned char *m,
                                    unsigned long long mlen, const unsigned char *pk)


from . import _format as F
from ._format import CodeError, Result, Ticket, check_gate_args
from ._keys import Keyring

IMPLEMENTATION = "native"

# --- constants: compile-time sizes, checked against the shared _format module ----
cdef enum:
    RAW_LEN = 100          # payload + signature
    PAYLOAD = 36
    SIG = 64
    PK = 32
    MAX_DOMAIN = 64
    CHUNK = 256            # codes per nogil section: bounds memory, GIL taken rarely

# Reason codes: indexes into _format.REASONS (same order as the Reason enum).
cdef enum:
    R_OK = 0
    R_MALFORMED_CODE
    R_WRONG_SCHEME
    R_NON_CANONICAL_ENCODING
    R_WRONG_LENGTH
    R_TRAILING_BYTES
    R_UNKNOWN_CODE_VERSION
    R_UNKNOWN_KEY
    R_REVOKED_KEY
    R_FORGED_CODE
    R_EXPIRED
    R_NOT_YET_VALID
    R_OUTSIDE_TIME_WINDOW
    R_NOT_VALID_FOR_ATTRACTION
    R_NOT_VALID_FOR_PARK
    R_PENDING = 255            # not decided yet (internal)

_C_REASON_NAMES = (
    "OK", "MALFORMED_CODE", "WRONG_SCHEME", "NON_CANONICAL_ENCODING", "WRONG_LENGTH",
    "TRAILING_BYTES", "UNKNOWN_CODE_VERSION", "UNKNOWN_KEY", "REVOKED_KEY", "FORGED_CODE",
    "EXPIRED", "NOT_YET_VALID", "OUTSIDE_TIME_WINDOW", "NOT_VALID_FOR_ATTRACTION",
    "NOT_VALID_FOR_PARK",
)

cdef enum:
    MODE_DECODE = 0    # steps 1-10
    MODE_AUTH = 1      # + key and signature (11-13)
    MODE_GATE = 2      # + gate rules (14-18)

cdef enum:
    FLAG_NIGHT_TOUR = 0x01
    FLAG_MULTI_PERSON = 0x02
    FLAG_ALL_ATTRACTIONS = 0x04
    FLAGS_KNOWN = 0x07

cdef enum:
    STATE_REVOKED = 2


cdef struct Item:
    const uint8_t* text
    Py_ssize_t length
    int reason
    bint verified
    uint8_t raw[RAW_LEN]
    uint8_t version
    uint8_t flags
    uint8_t persons
    uint16_t key_id
    uint16_t park_id
    uint16_t window_start
    uint16_t window_end
    uint32_t product_id
    uint32_t valid_from
    uint32_t valid_until
    uint64_t serial
    uint64_t attractions


cdef struct Key:
    uint16_t key_id
    uint8_t state
    uint8_t pk[PK]


cdef struct Gate:
    int64_t now
    int64_t utc_offset
    uint16_t park_id
    uint32_t attraction_id


# --- tables built once at import from _format ------------------------------------
cdef signed char DIGIT[256]        # Base45 digit, -1 invalid, -2 ASCII lower case
cdef bint KNOWN_VERSION[256]
cdef uint8_t SCHEME_C[16]
cdef Py_ssize_t SCHEME_LEN
cdef uint8_t DOMAIN_C[MAX_DOMAIN]
cdef Py_ssize_t DOMAIN_LEN
cdef int MINUTES_PER_DAY


def _init_tables():
    global SCHEME_LEN, DOMAIN_LEN, MINUTES_PER_DAY
    if tuple(r.name for r in F.REASONS) != _C_REASON_NAMES:
        raise ImportError("parkgate.native._native: Reason order differs from _format.REASONS")
    if (F.CODE_BYTES, F.PAYLOAD_LEN, F.SIGNATURE_LEN, F.PUBLIC_KEY_LEN) != (RAW_LEN, PAYLOAD, SIG, PK):
        raise ImportError("parkgate.native._native was built for another code layout: rebuild it")
    if (F.FLAG_NIGHT_TOUR, F.FLAG_MULTI_PERSON, F.FLAG_ALL_ATTRACTIONS) != (
            FLAG_NIGHT_TOUR, FLAG_MULTI_PERSON, FLAG_ALL_ATTRACTIONS):
        raise ImportError("parkgate.native._native: flag bits differ from _format")
    cdef int i
    for i in range(256):
        DIGIT[i] = -1
        KNOWN_VERSION[i] = i in F.KNOWN_VERSIONS
    for i, ch in enumerate(F.BASE45_ALPHABET_BYTES):
        DIGIT[ch] = i
    for ch in F.LOWERCASE_BYTES:
        DIGIT[ch] = -2
    if len(F.SCHEME_BYTES) > 16 or len(F.DOMAIN) > MAX_DOMAIN:
        raise ImportError("scheme or domain too long for the native module")
    SCHEME_LEN = len(F.SCHEME_BYTES)
    memcpy(SCHEME_C, <const char*>F.SCHEME_BYTES, SCHEME_LEN)
    DOMAIN_LEN = len(F.DOMAIN)
    memcpy(DOMAIN_C, <const char*>F.DOMAIN, DOMAIN_LEN)
    MINUTES_PER_DAY = F.MINUTES_PER_DAY


if sodium_init() < 0:
    raise ImportError("libsodium could not be initialised")
_init_tables()
SODIUM_VERSION = sodium_version_string().decode()

cdef tuple REASONS = F.REASONS
cdef object _tuple_new = tuple.__new__


# --- the C core (no Python objects, no GIL) --------------------------------------
cdef inline uint64_t be(const uint8_t* p, int n) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(n):
        v = (v << 8) | p[i]
    return v


cdef int decode_item(Item* it) noexcept nogil:
    """Steps 1-10: Base45 into it.raw and the payload fields; returns a reason."""
    cdef const uint8_t* s = it.text
    cdef Py_ssize_t n = it.length, m, i, full, out = 0
    cdef int d
    cdef bint lower = False
    cdef uint32_t v, window
    if n < SCHEME_LEN or memcmp(s, SCHEME_C, SCHEME_LEN) != 0:
        return R_WRONG_SCHEME
    s += SCHEME_LEN
    m = n - SCHEME_LEN
    # Every character is looked at before any other check: a stray character
    # anywhere means "not our code" and outranks a lower-case letter.
    for i in range(m):
        d = DIGIT[s[i]]
        if d == -1:
            return R_MALFORMED_CODE
        if d == -2:
            lower = True
    if lower:
        return R_NON_CANONICAL_ENCODING
    if m % 3 == 1:
        return R_MALFORMED_CODE
    full = m - m % 3
    i = 0
    while i < full:
        v = <uint32_t>DIGIT[s[i]] + <uint32_t>DIGIT[s[i + 1]] * 45 + <uint32_t>DIGIT[s[i + 2]] * 2025
        if v > 0xFFFF:
            return R_NON_CANONICAL_ENCODING
        if out <= RAW_LEN - 2:   # keep decoding past the buffer: only the count matters there
            it.raw[out] = <uint8_t>(v >> 8)
            it.raw[out + 1] = <uint8_t>v
        out += 2
        i += 3
    if m % 3 == 2:
        v = <uint32_t>DIGIT[s[full]] + <uint32_t>DIGIT[s[full + 1]] * 45
        if v > 0xFF:
            return R_NON_CANONICAL_ENCODING
        if out < RAW_LEN:
            it.raw[out] = <uint8_t>v
        out += 1
    if out == 0:
        return R_WRONG_LENGTH
    if not KNOWN_VERSION[it.raw[0]]:
        return R_UNKNOWN_CODE_VERSION
    if out < RAW_LEN:
        return R_WRONG_LENGTH
    if out > RAW_LEN:
        return R_TRAILING_BYTES
    cdef const uint8_t* p = it.raw
    it.version = p[0]
    it.key_id = <uint16_t>be(p + 1, 2)
    it.serial = be(p + 3, 6)
    it.product_id = <uint32_t>be(p + 9, 4)
    it.park_id = <uint16_t>be(p + 13, 2)
    it.valid_from = <uint32_t>be(p + 15, 4)
    it.valid_until = <uint32_t>be(p + 19, 4)
    it.flags = p[23]
    it.persons = p[24]
    window = <uint32_t>be(p + 25, 3)
    it.window_start = <uint16_t>(window >> 12)
    it.window_end = <uint16_t>(window & 0xFFF)
    it.attractions = be(p + 28, 8)
    if not canonical(it):
        return R_MALFORMED_CODE
    return R_OK


cdef bint canonical(const Item* it) noexcept nogil:
    """Mirror of _format.fields_canonical."""
    if it.flags & ~FLAGS_KNOWN:
        return False
    if it.persons < 1 or ((it.flags & FLAG_MULTI_PERSON) != 0) != (it.persons > 1):
        return False
    if it.flags & FLAG_NIGHT_TOUR:
        if (it.window_start >= MINUTES_PER_DAY or it.window_end >= MINUTES_PER_DAY
                or it.window_start == it.window_end):
            return False
    elif it.window_start or it.window_end:
        return False
    if it.flags & FLAG_ALL_ATTRACTIONS and it.attractions:
        return False
    return it.valid_from < it.valid_until


cdef int rules(const Item* it, const Gate* g) noexcept nogil:
    """Steps 14-18: what a gate decides without a database."""
    cdef int64_t t, q, minute
    if it.park_id != g.park_id:
        return R_NOT_VALID_FOR_PARK
    if g.now < it.valid_from:
        return R_NOT_YET_VALID
    if g.now >= it.valid_until:
        return R_EXPIRED
    if it.flags & FLAG_NIGHT_TOUR:
        # floor division: now + offset can be negative near the epoch.
        t = g.now + g.utc_offset
        q = t / 60
        if t % 60 < 0:
            q -= 1
        minute = q % MINUTES_PER_DAY
        if minute < 0:
            minute += MINUTES_PER_DAY
        if it.window_start < it.window_end:
            if not (it.window_start <= minute < it.window_end):
                return R_OUTSIDE_TIME_WINDOW
        elif not (minute >= it.window_start or minute < it.window_end):
            return R_OUTSIDE_TIME_WINDOW
    if g.attraction_id and not it.flags & FLAG_ALL_ATTRACTIONS:
        if g.attraction_id > 64 or not (it.attractions >> (g.attraction_id - 1)) & 1:
            return R_NOT_VALID_FOR_ATTRACTION
    return R_OK


cdef int process(Item* it, const Key* keys, Py_ssize_t nkeys, const Gate* g, int mode) noexcept nogil:
    cdef int r = decode_item(it)
    cdef Py_ssize_t k
    cdef const Key* key = NULL
    cdef uint8_t msg[MAX_DOMAIN + PAYLOAD]
    if r != R_OK or mode == MODE_DECODE:
        return r
    for k in range(nkeys):    # a handful of keys: a scan beats any hash
        if keys[k].key_id == it.key_id:
            key = &keys[k]
            break
    if key == NULL:
        return R_UNKNOWN_KEY
    if key.state == STATE_REVOKED:
        return R_REVOKED_KEY
    memcpy(msg, DOMAIN_C, DOMAIN_LEN)
    memcpy(msg + DOMAIN_LEN, it.raw, PAYLOAD)
    if crypto_sign_verify_detached(it.raw + PAYLOAD, msg, DOMAIN_LEN + PAYLOAD, key.pk) != 0:
        return R_FORGED_CODE
    it.verified = True
    if mode == MODE_AUTH:
        return R_OK
    return rules(it, g)


# --- the Python glue (GIL held, kept to a minimum per code) -----------------------
cdef int prepare(Item* it, object code, list holders) except -1:
    """Point the item at the code's characters, in place; no copy for str/bytes."""
    it.verified = False
    it.reason = R_PENDING
    if isinstance(code, str):
        PyUnicode_READY(code)
        if PyUnicode_IS_ASCII(code):
            it.text = <const uint8_t*>PyUnicode_DATA(code)
            it.length = PyUnicode_GET_LENGTH(code)
        else:
            # A non-ASCII character is never Base45 (step 2), so only the
            # scheme check (step 1) can come first; no need to look further.
            it.reason = R_MALFORMED_CODE if code.startswith(F.SCHEME) else R_WRONG_SCHEME
    elif isinstance(code, bytes):
        it.text = <const uint8_t*>PyBytes_AS_STRING(code)
        it.length = PyBytes_GET_SIZE(code)
    elif isinstance(code, bytearray):
        # A bytearray can be resized by another thread while we run without
        # the GIL: work on an immutable copy.
        code = bytes(code)
        holders.append(code)
        it.text = <const uint8_t*>PyBytes_AS_STRING(code)
        it.length = PyBytes_GET_SIZE(code)
    else:
        raise TypeError(f"a ticket code is str or bytes, not {type(code).__name__}")
    return 0


cdef object make_ticket(const Item* it):
    return _tuple_new(Ticket, (it.version, it.key_id, it.serial, it.product_id, it.park_id,
                               it.valid_from, it.valid_until, it.flags, it.persons,
                               it.window_start, it.window_end, it.attractions))


cdef object make_result(const Item* it):
    ticket = make_ticket(it) if it.verified else None
    return _tuple_new(Result, (it.reason == R_OK, REASONS[it.reason], ticket))


cdef Key* load_keys(object keyring, Py_ssize_t* nkeys) except? NULL:
    """Copy the keyring's immutable snapshot into a C array (a few keys per call)."""
    cdef tuple snap = keyring._snapshot
    cdef Py_ssize_t n = len(snap), i
    nkeys[0] = n
    if n == 0:
        return NULL
    cdef Key* keys = <Key*>PyMem_Malloc(n * sizeof(Key))
    if keys == NULL:
        raise MemoryError()
    for i in range(n):
        key_id, state, pk = snap[i]
        keys[i].key_id = key_id
        keys[i].state = state
        memcpy(keys[i].pk, <const char*>pk, PK)
    return keys


cdef list run(object codes, object keyring, Gate* g, int mode):
    # Our own list: it keeps every code alive while C pointers into them are
    # used without the GIL, even if the caller's list is changed by another thread.
    cdef list seq = list(codes)
    cdef Py_ssize_t n = len(seq), base, j, m, nkeys = 0
    cdef list results = []
    cdef list holders = []
    cdef Key* keys = NULL
    cdef Item* items = NULL
    if not isinstance(keyring, Keyring):
        raise TypeError(f"expected a Keyring, not {type(keyring).__name__}")
    if n == 0:
        return results
    try:
        keys = load_keys(keyring, &nkeys)
        items = <Item*>PyMem_Malloc(min(n, CHUNK) * sizeof(Item))
        if items == NULL:
            raise MemoryError()
        for base in range(0, n, CHUNK):
            m = min(CHUNK, n - base)
            for j in range(m):
                prepare(&items[j], seq[base + j], holders)
            with nogil:
                for j in range(m):
                    if items[j].reason == R_PENDING:
                        items[j].reason = process(&items[j], keys, nkeys, g, mode)
            for j in range(m):
                results.append(make_result(&items[j]))
            del holders[:]
    finally:
        PyMem_Free(items)
        PyMem_Free(keys)
    return results


cdef int gate_args(Gate* g, now, utc_offset, park_id, attraction_id) except -1:
    now, utc_offset, park_id, attraction_id = check_gate_args(now, utc_offset, park_id, attraction_id)
    g.now = now
    g.utc_offset = utc_offset
    g.park_id = park_id
    g.attraction_id = attraction_id
    return 0


# --- public functions (same signatures as _pure) ----------------------------------
def decode(code):
    """Parse a code without checking its signature. Raises CodeError."""
    cdef Item it
    cdef list holders = []   # keeps a bytearray's copy alive while it.text points into it
    prepare(&it, code, holders)
    if it.reason == R_PENDING:
        it.reason = decode_item(&it)
    if it.reason != R_OK:
        raise CodeError(REASONS[it.reason])
    return make_ticket(&it)


def authenticate(code, keyring):
    """Decode and check key and signature (no gate rules). Raises CodeError."""
    cdef Gate g
    memset(&g, 0, sizeof(Gate))
    result = run((code,), keyring, &g, MODE_AUTH)[0]
    if not result.ok:
        raise CodeError(result.reason)
    return result.ticket


def authenticate_batch(codes, keyring):
    """Decode and check key and signature of each code, in order, without the GIL; no gate rules.

    Result.ok means authentic; its ticket is then the trusted payload.
    """
    cdef Gate g
    memset(&g, 0, sizeof(Gate))
    return run(codes, keyring, &g, MODE_AUTH)


def verify(code, keyring, *, now, utc_offset, park_id, attraction_id=0):
    """The full gate decision for one code; never raises for a bad code."""
    cdef Gate g
    gate_args(&g, now, utc_offset, park_id, attraction_id)
    return run((code,), keyring, &g, MODE_GATE)[0]


def verify_batch(codes, keyring, *, now, utc_offset, park_id, attraction_id=0):
    """The full gate decision for each code, in order, verified without the GIL."""
    cdef Gate g
    gate_args(&g, now, utc_offset, park_id, attraction_id)
    return run(codes, keyring, &g, MODE_GATE)


# --- the crypto ceiling, for loadtests/bench_native ---------------------------------
cdef class BareVerifier:
    """crypto_sign_verify_detached over pre-split (signature, key, message) triples.

    Nothing else happens in ``run``: it is the ceiling any code validation
    can reach on this machine, measured with the same signatures.
    """

    cdef uint8_t* buf
    cdef Py_ssize_t n
    cdef Py_ssize_t mlen
    cdef Py_ssize_t stride

    def __cinit__(self, messages, signatures, public_keys):
        self.n = len(messages)
        if not (self.n == len(signatures) == len(public_keys)) or self.n == 0:
            raise ValueError("need as many (non-zero) messages, signatures and keys")
        self.mlen = len(messages[0])
        self.stride = SIG + PK + self.mlen
        self.buf = <uint8_t*>PyMem_Malloc(self.n * self.stride)
        if self.buf == NULL:
            raise MemoryError()
        cdef Py_ssize_t i
        cdef uint8_t* p
        for i in range(self.n):
            msg, sig, pk = bytes(messages[i]), bytes(signatures[i]), bytes(public_keys[i])
            if len(msg) != self.mlen or len(sig) != SIG or len(pk) != PK:
                raise ValueError("messages of one length, 64-byte signatures, 32-byte keys")
            p = self.buf + i * self.stride
            memcpy(p, <const char*>sig, SIG)
            memcpy(p + SIG, <const char*>pk, PK)
            memcpy(p + SIG + PK, <const char*>msg, self.mlen)

    def __dealloc__(self):
        PyMem_Free(self.buf)

    def __len__(self):
        return self.n

    def run(self):
        """Verify every signature once; returns how many verified."""
        cdef Py_ssize_t i, good = 0
        cdef uint8_t* p
        with nogil:
            for i in range(self.n):
                p = self.buf + i * self.stride
                if crypto_sign_verify_detached(p, p + SIG + PK, self.mlen, p + SIG) == 0:
                    good += 1
        return good
