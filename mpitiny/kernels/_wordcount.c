/* Wordcount's map kernel: tokenise a byte buffer exactly like bytes.split() and count its
 * distinct words in one pass, then emit them as the arrays of a word table
 * (jobs/mapreduce.py, ``_table``). Plain C99 and the CPython C API; the GIL is released
 * while the buffer is scanned.
 *
 * count(buffer, reducers=1) -> (short, short_counts, lo, hi, counts,
 *                   long_chunks, long_lens, long_counts, long_hashes, bounds, tokens)
 *
 * Each of the first ten is a bytes object holding a little-endian uint64 / int64 array
 * (np.frombuffer); ``tokens`` is an int. The words are grouped by their partition
 * (mapreduce.partition_of of ``lo``, or of the long word's hash), in the order of their first
 * occurrence within each: the order numpy's stable sort by partition gives
 * (mapreduce.split_parts), so a map slices its R tables out of these arrays. ``bounds`` is 4
 * rows of reducers + 1: where each partition's short words, two-word keys, long words and
 * long words' chunks begin (and the total). ``long_hashes`` are longwords.hash_chunks' (the
 * hash the reducers group long words by).
 *
 * A token is a maximal run of bytes that are not b" \t\n\r\v\f" (any other byte, NUL and
 * non-ASCII included, is a word byte; tokens of any length). A word of at most 15 bytes is
 * its key: lo = bytes 0-7, hi = bytes 8-14 with the length in the top byte, zero-padded. It
 * is a "short" word (``lo`` alone) when hi == _short_hi(lo) in mapreduce.py: at most 8
 * bytes and its last byte not zero (or exactly the one byte 0). A longer word goes out as
 * its 8-byte chunks (the last zero-padded), its length and count (its hash, the one the
 * reducers group long words by, is longwords.hash_chunks' of these chunks).
 *
 * The table is open addressing with linear probing: a slot holds the top 32 bits of the
 * token's hash and its entry number + 1 (0: empty); an entry (32 bytes) holds the key words
 * (lo, hi), where the word first occurs, its length and its count (the hash is made again
 * when the table grows; a word's kind when the table is emitted). A word of at most 16 bytes is
 * compared by its key words, a longer one by memcmp with its first occurrence. The table
 * doubles when half full. One workspace is kept for the process and reused (no fresh pages
 * per call); a call that finds it in use (another thread) makes its own.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

typedef struct {             /* 32 bytes: two to a cache line */
    uint64_t lo, hi;
    int64_t start;
    uint32_t len, count;     /* count() takes buffers under 4 GiB */
} Entry;

enum { SHORT, TWO, LONG };

typedef struct {
    uint64_t *slots;
    size_t nslots;           /* allocated slots (a power of two) */
    Entry *entries;
    size_t nentries_cap;
    double words_per_byte;   /* distinct words per input byte of the last call (0: none yet) */
    int busy;
} Workspace;

static Workspace shared_ws;

static const uint8_t IS_WS[256] = {
    [' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1, ['\v'] = 1, ['\f'] = 1,
};

#define HA 0x9E3779B97F4A7C15ULL
#define HB 0xC2B2AE3D27D4EB4FULL
#define LW_M1 0xBF58476D1CE4E5B9ULL
#define LW_M2 0x94D049BB133111EBULL

static inline uint64_t load_le(const uint8_t *p, int64_t k, const uint8_t *end)
{   /* the first min(k, 8) bytes at p (k > 0) as a little-endian uint64, zero-padded; no byte
     * at or after end is read */
    uint64_t v = 0;
    if (p + 8 <= end) {
        memcpy(&v, p, 8);
        if (k < 8)
            v &= ~0ULL >> (64 - 8 * k);
    } else {
        for (int64_t i = 0; i < k && i < 8; i++)
            v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

/* The whitespace bytes of buf[at:at + 64] as the bits of a uint64 (bit j: byte at + j), the
 * bytes at or after n counted as whitespace. */
static inline uint64_t ws_bits(const uint8_t *buf, int64_t n, int64_t at)
{
    uint64_t bits = 0;
#ifdef __SSE2__
    if (at + 64 <= n) {
        const __m128i space = _mm_set1_epi8(' '), nine = _mm_set1_epi8(9), four = _mm_set1_epi8(4);
        for (int k = 0; k < 4; k++) {
            __m128i b = _mm_loadu_si128((const __m128i *)(buf + at + 16 * k));
            __m128i t = _mm_sub_epi8(b, nine);     /* 9-13 -> 0-4, unsigned */
            __m128i ws = _mm_or_si128(_mm_cmpeq_epi8(b, space),
                                      _mm_cmpeq_epi8(_mm_min_epu8(t, four), t));
            bits |= (uint64_t)(uint16_t)_mm_movemask_epi8(ws) << (16 * k);
        }
        return bits;
    }
#endif
    for (int j = 0; j < 64; j++)
        bits |= (uint64_t)(at + j >= n || IS_WS[buf[at + j]]) << j;
    return bits;
}

typedef struct {
    const uint8_t *buf;
    int64_t n, block;       /* the 64-byte block whose bits ws holds */
    uint64_t ws;
} Scanner;

/* The first position from i on that is whitespace (want_ws) or not, or n. */
static inline int64_t seek(Scanner *s, int64_t i, int want_ws)
{
    while (i < s->n) {
        int64_t block = i >> 6;
        if (block != s->block) {
            s->block = block;
            s->ws = ws_bits(s->buf, s->n, block << 6);
        }
        uint64_t m = (want_ws ? s->ws : ~s->ws) >> (i & 63);
        if (m) {
            i += __builtin_ctzll(m);
            return i < s->n ? i : s->n;
        }
        i = (block + 1) << 6;
    }
    return s->n;
}

static inline uint64_t mix64(uint64_t h)
{
    h ^= h >> 30;
    h *= LW_M1;
    h ^= h >> 27;
    h *= LW_M2;
    h ^= h >> 31;
    return h;
}

static inline uint64_t token_hash(const uint8_t *p, int64_t len, uint64_t lo, uint64_t hi,
                                  const uint8_t *end)
{
    uint64_t h = lo * HA ^ hi * HB;
    for (int64_t at = 16; at < len; at += 8) {
        h ^= load_le(p + at, len - at, end);
        h *= HA;
        h ^= h >> 29;
    }
    return mix64(h ^ (uint64_t)len);
}

static int ws_reserve(Workspace *ws, size_t nslots, size_t nentries)
{
    if (ws->nslots < nslots) {
        uint64_t *s = realloc(ws->slots, nslots * sizeof(uint64_t));
        if (!s)
            return -1;
        ws->slots = s;
        ws->nslots = nslots;
    }
    if (ws->nentries_cap < nentries) {
        Entry *e = realloc(ws->entries, nentries * sizeof(Entry));
        if (!e)
            return -1;
        ws->entries = e;
        ws->nentries_cap = nentries;
    }
    return 0;
}

static inline uint64_t token_hash(const uint8_t *p, int64_t len, uint64_t lo, uint64_t hi,
                                  const uint8_t *end);

/* Double the table (mask + 1 slots in use -> 2x), reinserting every entry. */
static int grow(Workspace *ws, size_t *mask, size_t n, const uint8_t *buf, const uint8_t *end)
{
    size_t cap = 2 * (*mask + 1);
    if (ws_reserve(ws, cap, cap / 2 + 1) < 0)
        return -1;
    memset(ws->slots, 0, cap * sizeof(uint64_t));
    *mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        const Entry *e = &ws->entries[i];
        uint64_t h = token_hash(buf + e->start, e->len, e->lo, e->hi, end);
        size_t at = (size_t)(h >> 32) & *mask;
        while (ws->slots[at])
            at = (at + 1) & *mask;
        ws->slots[at] = (h & 0xFFFFFFFF00000000ULL) | (uint64_t)(i + 1);
    }
    return 0;
}

static inline int same_word(const Entry *e, const uint8_t *buf, const uint8_t *p, int64_t len,
                            uint64_t lo, uint64_t hi)
{
    if ((int64_t)e->len != len || e->lo != lo || e->hi != hi)
        return 0;
    return len <= 16 || memcmp(buf + e->start + 16, p + 16, (size_t)(len - 16)) == 0;
}

typedef struct {
    uint64_t lo, hi, h;
    int64_t start, len;
} Token;

#define BATCH 32   /* tokens found first, then looked up: their slots and entries prefetched */

/* Up to BATCH tokens of buf from *at on: their keys and hashes; their slots prefetched. */
static int next_tokens(Scanner *s, int64_t *at, Token *t, const uint64_t *slots, size_t mask)
{
    const uint8_t *buf = s->buf, *end = buf + s->n;
    int k = 0;
    int64_t i = *at;
    while (k < BATCH) {
        int64_t start = seek(s, i, 0);
        if (start >= s->n) {
            i = start;
            break;
        }
        i = seek(s, start + 1, 1);
        int64_t len = i - start;
        const uint8_t *p = buf + start;
        uint64_t lo = load_le(p, len, end), hi;
        if (len <= 8)
            hi = (uint64_t)len << 56;
        else if (len <= 15)
            hi = load_le(p + 8, len - 8, end) | ((uint64_t)len << 56);
        else
            hi = load_le(p + 8, 8, end);
        uint64_t h = token_hash(p, len, lo, hi, end);
        __builtin_prefetch(&slots[(size_t)(h >> 32) & mask]);
        t[k++] = (Token){lo, hi, h, start, len};
    }
    *at = i;
    return k;
}

/* SHORT: at most 8 bytes, the last not zero (or the one byte 0): mapreduce's short words. */
static inline int64_t kind_of(const uint8_t *buf, const Entry *e)
{
    if (e->len <= 8 && (e->len == 1 || buf[e->start + e->len - 1] != 0))
        return SHORT;
    return e->len <= 15 ? TWO : LONG;
}

/* Add one token to the table; -1: out of memory (or over 2**32 - 1 distinct words). */
static inline int add_token(Workspace *ws, const uint8_t *buf, const uint8_t *end,
                            const Token *t, size_t *mask, size_t *nent)
{
    uint64_t tag = t->h & 0xFFFFFFFF00000000ULL;
    size_t at = (size_t)(t->h >> 32) & *mask;
    while (1) {
        uint64_t s = ws->slots[at];
        if (s == 0) {
            if (*nent >= 0xFFFFFFFFULL)     /* a slot holds a 32-bit entry number */
                return -1;
            Entry *e = &ws->entries[(*nent)++];
            *e = (Entry){t->lo, t->hi, t->start, (uint32_t)t->len, 1};
            ws->slots[at] = tag | (uint64_t)*nent;
            if (2 * *nent > *mask + 1)
                return grow(ws, mask, *nent, buf, end);
            return 0;
        }
        if ((s & 0xFFFFFFFF00000000ULL) == tag) {
            Entry *e = &ws->entries[(s & 0xFFFFFFFFULL) - 1];
            if (same_word(e, buf, buf + t->start, t->len, t->lo, t->hi)) {
                e->count++;
                return 0;
            }
        }
        at = (at + 1) & *mask;
    }
}

/* Count the words of buf[0:n]; returns the number of distinct words, or -1 (out of memory).
 * *tokens gets the number of tokens. The table starts at about n / 64 slots (a split's
 * vocabulary is far below its tokens: a small table stays in the cache), or, after a first
 * call, at the size the last call's distinct words per byte ask for at this n (the splits of
 * one input are alike: on the real corpora the table doubled 2-3 times per split, each time
 * moving every entry), and doubles. */
static Py_ssize_t scan(Workspace *ws, const uint8_t *buf, int64_t n, int64_t *tokens)
{
    size_t cap = 1024, want = (size_t)(n / 64);
    if (ws->words_per_byte > 0)
        want = (size_t)(2.5 * ws->words_per_byte * (double)n);
    while (cap < want && cap < ((size_t)1 << 24))
        cap <<= 1;
    if (ws_reserve(ws, cap, cap / 2 + 1) < 0)
        return -1;
    memset(ws->slots, 0, cap * sizeof(uint64_t));
    size_t mask = cap - 1, nent = 0;
    int64_t ntok = 0, i = 0;
    Token t[BATCH];
    Scanner scanner = {buf, n, -1, 0};
    while (1) {
        int k = next_tokens(&scanner, &i, t, ws->slots, mask);
        if (k == 0)
            break;
        ntok += k;
        for (int j = 0; j < k; j++) {
            uint64_t s = ws->slots[(size_t)(t[j].h >> 32) & mask];
            if (s)
                __builtin_prefetch(&ws->entries[(s & 0xFFFFFFFFULL) - 1]);
        }
        for (int j = 0; j < k; j++)
            if (add_token(ws, buf, buf + n, &t[j], &mask, &nent) < 0)
                return -1;
    }
    *tokens = ntok;
    if (n > 0)
        ws->words_per_byte = (double)nent / (double)n;
    return (Py_ssize_t)nent;
}

typedef struct {
    uint64_t *short_lo, *lo, *hi, *chunks, *long_hashes;
    int64_t *short_counts, *counts, *long_lens, *long_counts;
} Out;

#define LW_P 0x9E3779B97F4A7C15ULL
#define LW_LEN_MIX 0xD6E8FEB86659FD93ULL
#define PART_MUL 0xD6E8FEB86659FD93ULL

/* longwords.hash_chunks of one word: sum(m(chunk[j]) * M2 * P**j), m(c) = c*M1 ^ >> 32, the
 * length mixed in, then mix64 (longwords._mix). */
static inline uint64_t long_hash(const uint8_t *p, int64_t len, const uint8_t *end)
{
    uint64_t h = 0, pw = LW_M2;
    for (int64_t at = 0; at < len; at += 8) {
        uint64_t x = load_le(p + at, len - at, end) * LW_M1;
        x ^= x >> 32;
        h += x * pw;
        pw *= LW_P;
    }
    return mix64(h ^ (uint64_t)len * LW_LEN_MIX);
}

/* mapreduce.partition_of: the top 32 bits of key * C, scaled to the reducers. */
static inline int64_t partition_of(uint64_t key, uint64_t reducers)
{
    return (int64_t)((((key * PART_MUL) >> 32) * reducers) >> 32);
}

/* Where each kind of array of each partition begins: at[kind][part], kinds SHORT, TWO, LONG
 * (words) and LONG + 1 (the long words' chunks); after emit, where each ends. */
typedef struct {
    int64_t *at[4];
} Cursor;

static void emit(const Workspace *ws, size_t nent, const uint8_t *buf, const uint8_t *buf_end,
                 const uint32_t *tags, Out *o, Cursor *c)
{
    for (size_t k = 0; k < nent; k++) {
        const Entry *e = &ws->entries[k];
        int64_t kind = tags[k] & 3, part = tags[k] >> 2;
        int64_t i = c->at[kind][part]++;
        if (kind == SHORT) {
            o->short_lo[i] = e->lo;
            o->short_counts[i] = e->count;
        } else if (kind == TWO) {
            o->lo[i] = e->lo;
            o->hi[i] = e->hi;
            o->counts[i] = e->count;
        } else {
            const uint8_t *p = buf + e->start;
            int64_t nc = c->at[3][part];
            for (int64_t at = 0; at < e->len; at += 8)
                o->chunks[nc++] = load_le(p + at, e->len - at, buf_end);
            c->at[3][part] = nc;
            o->long_lens[i] = e->len;
            o->long_counts[i] = e->count;
            o->long_hashes[i] = e->lo;
        }
    }
}

static PyObject *new_array(Py_ssize_t n, void **data)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, n * 8);
    if (b)
        *data = PyBytes_AS_STRING(b);
    return b;
}

/* Each entry's kind and partition (tags: kind | partition << 2), the long words' hashes (in
 * their entries' lo, which emit does not need), and the bounds (4 rows of reducers + 1
 * int64: short words, two-word keys, long words, long chunks) of each partition. */
static void place(Workspace *ws, size_t nent, const uint8_t *buf, int64_t n, int64_t reducers,
                  uint32_t *tags, int64_t *bounds)
{
    const uint8_t *end = buf + n;
    int64_t row = reducers + 1;
    memset(bounds, 0, 4 * (size_t)row * sizeof(int64_t));
    for (size_t k = 0; k < nent; k++) {
        Entry *e = &ws->entries[k];
        int64_t kind = kind_of(buf, e);
        if (kind == LONG) {
            e->lo = long_hash(buf + e->start, e->len, end);
            bounds[3 * row + partition_of(e->lo, (uint64_t)reducers) + 1] += (e->len + 7) / 8;
        }
        int64_t part = partition_of(e->lo, (uint64_t)reducers);
        bounds[kind * row + part + 1]++;
        tags[k] = (uint32_t)(kind | part << 2);
    }
    for (int k = 0; k < 4; k++)
        for (int64_t r = 0; r < reducers; r++)
            bounds[k * row + r + 1] += bounds[k * row + r];
}

static PyObject *build(Workspace *ws, size_t nent, const uint8_t *buf, int64_t n,
                       int64_t tokens, int64_t reducers)
{
    const uint8_t *buf_end = buf + n;
    int64_t row = reducers + 1;
    Out o;
    int64_t *bounds = NULL, *cursor = NULL;
    uint32_t *tags = NULL;
    PyObject *a[10] = {0};
    a[9] = new_array(4 * row, (void **)&bounds);
    cursor = malloc(4 * (size_t)row * sizeof(int64_t));
    tags = malloc((nent ? nent : 1) * sizeof(uint32_t));
    if (!a[9] || !cursor || !tags) {
        if (a[9])
            PyErr_NoMemory();
        Py_XDECREF(a[9]);
        free(cursor);
        free(tags);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    place(ws, nent, buf, n, reducers, tags, bounds);
    Py_END_ALLOW_THREADS
    Py_ssize_t ns = bounds[reducers], nt = bounds[row + reducers], nl = bounds[2 * row + reducers],
               nc = bounds[3 * row + reducers];
    Py_ssize_t sizes[9] = {ns, ns, nt, nt, nt, nc, nl, nl, nl};
    void **where[9] = {(void **)&o.short_lo, (void **)&o.short_counts, (void **)&o.lo,
                       (void **)&o.hi, (void **)&o.counts, (void **)&o.chunks,
                       (void **)&o.long_lens, (void **)&o.long_counts, (void **)&o.long_hashes};
    for (int k = 0; k < 9; k++) {
        a[k] = new_array(sizes[k], where[k]);
        if (!a[k]) {
            for (int j = 0; j < k; j++)
                Py_DECREF(a[j]);
            Py_DECREF(a[9]);
            free(cursor);
            free(tags);
            return NULL;
        }
    }
    memcpy(cursor, bounds, 4 * (size_t)row * sizeof(int64_t));
    Cursor c = {{cursor, cursor + row, cursor + 2 * row, cursor + 3 * row}};
    Py_BEGIN_ALLOW_THREADS
    emit(ws, nent, buf, buf_end, tags, &o, &c);
    Py_END_ALLOW_THREADS
    free(cursor);
    free(tags);
    return Py_BuildValue("(NNNNNNNNNNL)", a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8],
                         a[9], (long long)tokens);
}

static PyObject *count(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *arg;
    Py_ssize_t reducers = 1;
    if (!PyArg_ParseTuple(args, "O|n", &arg, &reducers))
        return NULL;
    if (reducers < 1 || reducers > ((Py_ssize_t)1 << 30)) {
        PyErr_SetString(PyExc_ValueError, "count: reducers must be 1 to 2**30");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if ((uint64_t)view.len >= ((uint64_t)1 << 32)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "count: a buffer of 4 GiB or more (counts are 32-bit)");
        return NULL;
    }
    Workspace own = {0};
    Workspace *ws = &own;
    if (!shared_ws.busy) {
        ws = &shared_ws;
        ws->busy = 1;
    }
    int64_t tokens = 0;
    Py_ssize_t nent;
    Py_BEGIN_ALLOW_THREADS
    nent = scan(ws, (const uint8_t *)view.buf, (int64_t)view.len, &tokens);
    Py_END_ALLOW_THREADS
    PyObject *result = nent < 0 ? PyErr_NoMemory()
                                : build(ws, (size_t)nent, (const uint8_t *)view.buf,
                                        (int64_t)view.len, tokens, (int64_t)reducers);
    if (ws == &own) {
        free(own.slots);
        free(own.entries);
    } else {
        ws->busy = 0;
    }
    PyBuffer_Release(&view);
    return result;
}

/* Segment copies for the reducers and merges (longwords.copy_segments, chunk_bytes). */

static int check_index(Py_buffer *b, const char *name)
{
    if (b->len % 8) {
        PyErr_Format(PyExc_ValueError, "%s: not an array of 8-byte integers", name);
        return -1;
    }
    return 0;
}

/* copy_segments(dst, dst_starts or None, src, src_starts, lens): dst[dst_starts[i]:][:lens[i]]
 * = src[src_starts[i]:][:lens[i]] for every i (dst_starts None: end to end from 0). */
static PyObject *copy_segments(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer dst, src, ss, ln, ds = {0};
    PyObject *dst_starts;
    if (!PyArg_ParseTuple(args, "w*Oy*y*y*", &dst, &dst_starts, &src, &ss, &ln))
        return NULL;
    int has_ds = dst_starts != Py_None;
    PyObject *result = NULL;
    if (has_ds && PyObject_GetBuffer(dst_starts, &ds, PyBUF_SIMPLE) < 0)
        goto done;
    if (check_index(&ss, "src_starts") || check_index(&ln, "lens") ||
        (has_ds && check_index(&ds, "dst_starts")))
        goto done;
    Py_ssize_t n = ln.len / 8;
    if (ss.len / 8 != n || (has_ds && ds.len / 8 != n)) {
        PyErr_SetString(PyExc_ValueError, "copy_segments: starts and lens differ in length");
        goto done;
    }
    const int64_t *sst = ss.buf, *len = ln.buf, *dst_at = has_ds ? ds.buf : NULL;
    uint8_t *d = dst.buf;
    const uint8_t *sp = src.buf;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    int64_t at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t to = has_ds ? dst_at[i] : at, from = sst[i], k = len[i];
        if (k < 0 || from < 0 || to < 0 || from + k > src.len || to + k > dst.len) {
            bad = 1;
            break;
        }
        memcpy(d + to, sp + from, (size_t)k);
        at = to + k;
    }
    Py_END_ALLOW_THREADS
    if (bad)
        PyErr_SetString(PyExc_IndexError, "copy_segments: a segment outside its buffer");
    else {
        Py_INCREF(Py_None);
        result = Py_None;
    }
done:
    if (has_ds && ds.obj)
        PyBuffer_Release(&ds);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    PyBuffer_Release(&ss);
    PyBuffer_Release(&ln);
    return result;
}

/* chunk_bytes(pool, first, lens) -> bytearray: word i is the first lens[i] bytes of the
 * uint64 chunks pool[first[i]:] (little-endian), the words end to end. */
static PyObject *chunk_bytes(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer pool, fb, ln;
    if (!PyArg_ParseTuple(args, "y*y*y*", &pool, &fb, &ln))
        return NULL;
    PyObject *out = NULL;
    if (check_index(&fb, "first") || check_index(&ln, "lens"))
        goto done;
    Py_ssize_t n = ln.len / 8;
    if (fb.len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "chunk_bytes: first and lens differ in length");
        goto done;
    }
    const int64_t *first = fb.buf, *len = ln.buf;
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (len[i] < 0 || first[i] < 0 || 8 * first[i] + len[i] > pool.len) {
            PyErr_SetString(PyExc_IndexError, "chunk_bytes: a word outside the chunks");
            goto done;
        }
        total += len[i];
    }
    out = PyByteArray_FromStringAndSize(NULL, total);
    if (!out)
        goto done;
    uint8_t *o = (uint8_t *)PyByteArray_AS_STRING(out);
    const uint8_t *p = pool.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        memcpy(o, p + 8 * first[i], (size_t)len[i]);
        o += len[i];
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&pool);
    PyBuffer_Release(&fb);
    PyBuffer_Release(&ln);
    return out;
}

/* merge_order: the order of rows by (count descending, lo, hi[, word bytes]) when they are a
 * few runs already in that order end to end (a merge task's rows: the sorted runs of the
 * reducers). */

typedef struct {
    const uint8_t *buf;
    const int64_t *start, *len;
} Words;

static inline int word_less(const Words *w, int64_t a, int64_t b)
{
    int64_t la = w->len[a], lb = w->len[b];
    int c = memcmp(w->buf + w->start[a], w->buf + w->start[b], (size_t)(la < lb ? la : lb));
    return c < 0 || (c == 0 && la < lb);
}

/* Rows whose words are buf[start[row]:][:len[row]] (order_ties, merge_order). */

typedef struct {
    const int64_t *count;
    const uint64_t *lo, *hi;
    const Words *words;      /* NULL: rows equal on (count, lo, hi) are equal */
} Keys;

static inline int key_less(const Keys *k, int64_t a, int64_t b)
{
    if (k->count[a] != k->count[b])
        return k->count[a] > k->count[b];
    if (k->lo[a] != k->lo[b])
        return k->lo[a] < k->lo[b];
    if (k->hi[a] != k->hi[b])
        return k->hi[a] < k->hi[b];
    return k->words && word_less(k->words, a, b);
}

/* Merge the sorted runs src[bounds[j]:bounds[j + 1]] pairwise until one is left (stable). */
static int64_t *merge_runs(const Keys *k, int64_t *src, int64_t *tmp, int64_t *bounds, int64_t runs)
{
    while (runs > 1) {
        int64_t out = 0;
        for (int64_t j = 0; j < runs; j += 2) {
            int64_t a = bounds[j], am = bounds[j + 1], b = am, bm = j + 1 < runs ? bounds[j + 2] : am;
            int64_t at = a;
            while (a < am && b < bm)
                tmp[at++] = key_less(k, src[b], src[a]) ? src[b++] : src[a++];
            while (a < am)
                tmp[at++] = src[a++];
            while (b < bm)
                tmp[at++] = src[b++];
            bounds[out++] = bounds[j];
        }
        bounds[out] = bounds[runs];
        runs = out;
        int64_t *t = src;
        src = tmp;
        tmp = t;
    }
    return src;
}

/* merge_order(counts, lo, hi, max_runs) -> bytearray of int64 rows, or None when the rows are
 * more than max_runs runs in order (then sort them otherwise). */
static PyObject *merge_order(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer cb, lb, hb, bb = {0}, sb = {0}, nb = {0};
    Py_ssize_t max_runs;
    if (!PyArg_ParseTuple(args, "y*y*y*n|y*y*y*", &cb, &lb, &hb, &max_runs, &bb, &sb, &nb))
        return NULL;
    PyObject *out = NULL;
    int64_t *bounds = NULL, *a = NULL, *b = NULL;
    if (check_index(&cb, "counts") || check_index(&lb, "lo") || check_index(&hb, "hi"))
        goto done;
    if (lb.len != cb.len || hb.len != cb.len) {
        PyErr_SetString(PyExc_ValueError, "merge_order: counts, lo and hi differ in length");
        goto done;
    }
    int64_t n = cb.len / 8, runs = 1;
    Words w = {bb.buf, sb.buf, nb.buf};
    Keys k = {cb.buf, lb.buf, hb.buf, NULL};
    if (bb.obj || sb.obj || nb.obj) {        /* the words too: ties broken by their bytes */
        if (!bb.obj || !sb.obj || !nb.obj || sb.len != cb.len || nb.len != cb.len) {
            PyErr_SetString(PyExc_ValueError, "merge_order: buf, starts and lens go together, "
                                              "one start and length per row");
            goto done;
        }
        for (int64_t i = 0; i < n; i++)
            if (w.start[i] < 0 || w.len[i] < 0 || w.start[i] + w.len[i] > bb.len) {
                PyErr_SetString(PyExc_IndexError, "merge_order: a word outside its buffer");
                goto done;
            }
        k.words = &w;
    }
    if (max_runs < 1)
        max_runs = 1;
    bounds = malloc(((size_t)max_runs + 2) * sizeof(int64_t));
    if (!bounds) {
        PyErr_NoMemory();
        goto done;
    }
    bounds[0] = 0;
    for (int64_t i = 1; i < n; i++) {
        if (key_less(&k, i, i - 1)) {
            if (runs == max_runs) {
                Py_INCREF(Py_None);
                out = Py_None;
                goto done;
            }
            bounds[runs++] = i;
        }
    }
    bounds[runs] = n;
    out = PyByteArray_FromStringAndSize(NULL, n * 8);
    a = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    b = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (!out || !a || !b) {
        Py_CLEAR(out);
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (int64_t i = 0; i < n; i++)
        a[i] = i;
    int64_t *sorted = merge_runs(&k, a, b, bounds, runs);
    memcpy(PyByteArray_AS_STRING(out), sorted, (size_t)n * sizeof(int64_t));
    Py_END_ALLOW_THREADS
done:
    free(bounds);
    free(a);
    free(b);
    PyBuffer_Release(&cb);
    PyBuffer_Release(&lb);
    PyBuffer_Release(&hb);
    if (bb.obj)
        PyBuffer_Release(&bb);
    if (sb.obj)
        PyBuffer_Release(&sb);
    if (nb.obj)
        PyBuffer_Release(&nb);
    return out;
}

/* order_ties: rows in order by (count descending, lo, hi) ordered within each run of equal
 * keys by their words' bytes (longwords.order_rows; lo/hi hold the first 15 bytes, so the
 * rows tied on them are long words sharing a prefix). */

/* Sort rows[0:n] by word_less (stable; tmp: n rows). */
static void sort_rows(const Words *w, int64_t *rows, int64_t *tmp, int64_t n)
{
    if (n <= 16) {
        for (int64_t i = 1; i < n; i++) {
            int64_t r = rows[i], j = i;
            while (j > 0 && word_less(w, r, rows[j - 1])) {
                rows[j] = rows[j - 1];
                j--;
            }
            rows[j] = r;
        }
        return;
    }
    int64_t h = n / 2;
    sort_rows(w, rows, tmp, h);
    sort_rows(w, rows + h, tmp, n - h);
    int64_t a = 0, b = h, at = 0;
    while (a < h && b < n)
        tmp[at++] = word_less(w, rows[b], rows[a]) ? rows[b++] : rows[a++];
    while (a < h)
        tmp[at++] = rows[a++];
    while (b < n)
        tmp[at++] = rows[b++];
    memcpy(rows, tmp, (size_t)n * sizeof(int64_t));
}

static PyObject *order_ties(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer ob, cb, lb, hb, bb, sb, nb;
    if (!PyArg_ParseTuple(args, "w*y*y*y*y*y*y*", &ob, &cb, &lb, &hb, &bb, &sb, &nb))
        return NULL;
    PyObject *out = NULL;
    int64_t *tmp = NULL;
    if (check_index(&ob, "order") || check_index(&cb, "counts") || check_index(&lb, "lo") ||
        check_index(&hb, "hi") || check_index(&sb, "starts") || check_index(&nb, "lens"))
        goto done;
    int64_t n = ob.len / 8;
    if (cb.len != ob.len || lb.len != ob.len || hb.len != ob.len || sb.len != ob.len ||
        nb.len != ob.len) {
        PyErr_SetString(PyExc_ValueError, "order_ties: the arrays differ in length");
        goto done;
    }
    int64_t *order = ob.buf;
    const int64_t *count = cb.buf, *start = sb.buf, *len = nb.buf;
    const uint64_t *lo = lb.buf, *hi = hb.buf;
    for (int64_t i = 0; i < n; i++) {
        int64_t r = order[i];
        if (r < 0 || r >= n || start[r] < 0 || len[r] < 0 || start[r] + len[r] > bb.len) {
            PyErr_SetString(PyExc_IndexError, "order_ties: a row or word outside its array");
            goto done;
        }
    }
    tmp = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (!tmp) {
        PyErr_NoMemory();
        goto done;
    }
    Words w = {bb.buf, start, len};
    Py_BEGIN_ALLOW_THREADS
    int64_t i = 0;
    while (i < n) {
        int64_t r = order[i], j = i + 1;
        while (j < n && count[order[j]] == count[r] && lo[order[j]] == lo[r] && hi[order[j]] == hi[r])
            j++;
        if (j - i > 1)
            sort_rows(&w, order + i, tmp, j - i);
        i = j;
    }
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    out = Py_None;
done:
    free(tmp);
    PyBuffer_Release(&ob);
    PyBuffer_Release(&cb);
    PyBuffer_Release(&lb);
    PyBuffer_Release(&hb);
    PyBuffer_Release(&bb);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&nb);
    return out;
}

/* tsv_lines(buf, starts, lens, counts, order) -> (lines bytearray, line_lens bytes of int64):
 * for each row r of order, "word<TAB>count\n" with word = buf[starts[r]:][:lens[r]] and count
 * in decimal (mapreduce.ranked_tsv). */

static inline int decimal(uint64_t v, char *out)
{   /* v's digits into out (at most 20); returns how many */
    char tmp[20];
    int k = 0;
    do {
        tmp[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int j = 0; j < k; j++)
        out[j] = tmp[k - 1 - j];
    return k;
}

static inline int n_digits(uint64_t v)
{
    int k = 1;
    while (v >= 10) {
        v /= 10;
        k++;
    }
    return k;
}

static PyObject *tsv_lines(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer bb, sb, nb, cb, ob;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*", &bb, &sb, &nb, &cb, &ob))
        return NULL;
    PyObject *lines = NULL, *lens_out = NULL, *result = NULL;
    if (check_index(&sb, "starts") || check_index(&nb, "lens") || check_index(&cb, "counts") ||
        check_index(&ob, "order"))
        goto done;
    int64_t rows = sb.len / 8, n = ob.len / 8;
    if (nb.len != sb.len || cb.len != sb.len) {
        PyErr_SetString(PyExc_ValueError, "tsv_lines: starts, lens and counts differ in length");
        goto done;
    }
    const int64_t *start = sb.buf, *len = nb.buf, *count = cb.buf, *order = ob.buf;
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t r = order[i];
        if (r < 0 || r >= rows || start[r] < 0 || len[r] < 0 || start[r] + len[r] > bb.len ||
            count[r] < 0) {
            PyErr_SetString(PyExc_IndexError, "tsv_lines: a row, word or count out of range");
            goto done;
        }
        total += len[r] + n_digits((uint64_t)count[r]) + 2;
    }
    lines = PyByteArray_FromStringAndSize(NULL, total);
    int64_t *ll = NULL;
    lens_out = new_array(n, (void **)&ll);
    if (!lines || !lens_out)
        goto done;
    char *o = PyByteArray_AS_STRING(lines);
    const uint8_t *buf = bb.buf;
    Py_BEGIN_ALLOW_THREADS
    for (int64_t i = 0; i < n; i++) {
        int64_t r = order[i], k = len[r];
        memcpy(o, buf + start[r], (size_t)k);
        o[k] = '\t';
        int d = decimal((uint64_t)count[r], o + k + 1);
        o[k + 1 + d] = '\n';
        o += k + d + 2;
        ll[i] = k + d + 2;
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, lines, lens_out);
done:
    Py_XDECREF(lines);
    Py_XDECREF(lens_out);
    PyBuffer_Release(&bb);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&cb);
    PyBuffer_Release(&ob);
    return result;
}

static PyMethodDef methods[] = {
    {"count", count, METH_VARARGS,
     "count(buffer, reducers=1) -> (short, short_counts, lo, hi, counts, long_chunks, "
     "long_lens, long_counts, long_hashes, bounds, tokens): the distinct words of a byte "
     "buffer (bytes.split()) with their counts, as the arrays of a word table (bytes holding "
     "little-endian uint64/int64), grouped by partition (mapreduce.partition_of), in the "
     "order of first occurrence within each; bounds: 4 x (reducers + 1) int64, where each "
     "partition's short words, two-word keys, long words and long chunks begin."},
    {"copy_segments", copy_segments, METH_VARARGS,
     "copy_segments(dst, dst_starts or None, src, src_starts, lens): dst[dst_starts[i]:]"
     "[:lens[i]] = src[src_starts[i]:][:lens[i]] for every i (int64 index arrays)."},
    {"chunk_bytes", chunk_bytes, METH_VARARGS,
     "chunk_bytes(pool, first, lens) -> bytearray: the first lens[i] bytes of the uint64 "
     "chunks from pool[first[i]], end to end (int64 index arrays)."},
    {"merge_order", merge_order, METH_VARARGS,
     "merge_order(counts, lo, hi, max_runs[, buf, starts, lens]) -> bytearray of int64 rows "
     "by count descending (int64), then lo, then hi (uint64)[, then the bytes of the row's "
     "word buf[starts[row]:][:lens[row]]], when the rows are at most max_runs runs in that "
     "order end to end; else None."},
    {"order_ties", order_ties, METH_VARARGS,
     "order_ties(order, counts, lo, hi, buf, starts, lens): in place, the rows of each run of "
     "order whose (counts, lo, hi) are equal ordered by their words' bytes "
     "(buf[starts[row]:][:lens[row]]; int64 / uint64 arrays, order writable)."},
    {"tsv_lines", tsv_lines, METH_VARARGS,
     "tsv_lines(buf, starts, lens, counts, order) -> (lines bytearray, line lengths as bytes "
     "of int64): word<TAB>count<LF> for each row of order, the word being "
     "buf[starts[row]:][:lens[row]] (int64 arrays, counts >= 0)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_wordcount",
    "Wordcount's map kernel: tokenise like bytes.split() and count the distinct words.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__wordcount(void)
{
    return PyModule_Create(&module);
}
