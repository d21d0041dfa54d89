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
 *
 * reduce_run (below) is the reducer: word tables summed, ranked and written as a run file.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
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

/* reduce_run(tables, fd) -> (rows, line_bytes, word_bytes, nbytes, nparts, total): wordcount's
 * reducer (wordcount.reduce_sorted) in one call. ``tables`` is a sequence of
 * mapreduce.pack_table blobs (one partition of every map output); their words are summed,
 * ranked by count descending, then bytes, and written to the open file ``fd`` as a run file
 * (sortedruns.write_run's bytes: the row count, then per row its line end, word end and
 * count, then the lines "word<TAB>count<LF>"). ``nbytes`` is the sum of the
 * tables' input bytes, ``nparts`` the largest of their partition counts (1: no table),
 * ``total`` the sum of the counts.
 *
 * Sums: a hash table (open addressing, linear probing; a slot holds the top 32 bits of the
 * hash and the word's number + 1) of words: a short word is the key (lo, its length << 56)
 * (mapreduce._short_hi), a two-word key is (lo, hi) as stored, a long word its chunks (equal
 * if the lengths and chunks are: memcmp), hashed by its table's hash. The table doubles when
 * half full; it starts at the size the last call's words asked for.
 *
 * Ranking: the words' sort keys (lo, hi byte-swapped: bytes 0-14 then the length byte, 15 for a
 * long word: unsigned order is byte order) ordered by an MSD radix sort (257 buckets a byte;
 * insertion sort below SMALL_SORT rows), which goes on for rows equal on both keys (long words
 * sharing 15 bytes, and the 15-byte word they begin with) with their bytes from byte 15 on (a
 * word that ends sorts first); then a stable counting sort by count descending (one pass for
 * the counts below FEW, a merge sort of the few larger ones). Both orders are total on
 * distinct words: the rows are those of mapreduce.ranked_tsv, byte for byte.
 *
 * The arrays (and the file's content, written from them) are kept for the process and reused
 * (as count's workspace: no fresh pages per call; a fifth of a reducer's time was page
 * faults), up to KEEP_BYTES; a call that finds them in use makes its own. */

#define PREFIX_HI 0x00FFFFFFFFFFFFFFULL

typedef struct {             /* 48 bytes */
    uint64_t lo, hi;         /* a key: the word's bytes, then its length; a long word's first
                              * 15 bytes as a key of length 15 (mapreduce's prefix keys) */
    uint64_t h;
    int64_t count, len;
    const uint8_t *chunks;   /* a long word's chunks (in its table), NULL for a key */
} Word;

typedef struct {             /* a word's sort keys, its number, its count (or UINT32_MAX) */
    uint64_t k0, k1;
    uint32_t w, c;
} Item;

typedef struct {
    uint64_t *slots;
    Word *words;
    Item *items, *tmp;
    uint8_t *out;            /* the run file's content */
    size_t nslots, nwords, nitems, ntmp, nout;   /* allocated */
    size_t mask, n;          /* the table in use: mask + 1 slots, n words */
    size_t last;             /* words of the last call */
    int busy;
} Reducer;

static Reducer shared_reducer;

static int reserve(void **p, size_t *have, size_t want, size_t size)
{
    if (*have >= want)
        return 0;
    void *q = realloc(*p, want * size);
    if (!q)
        return -1;
    *p = q;
    *have = want;
    return 0;
}

typedef struct {
    int64_t ns, n, nlong, nchunks, nbytes, nparts, width;
    const uint8_t *short_lo, *lo, *hi, *short_counts, *counts, *long_counts, *long_lens,
        *long_hashes, *chunks;
} Table;

static inline uint64_t get_u64(const uint8_t *p, int64_t i)
{
    uint64_t v;
    memcpy(&v, p + 8 * i, 8);
    return v;
}

static inline int64_t get_count(const uint8_t *p, int64_t width, int64_t i)
{
    if (width == 2) {
        uint16_t v;
        memcpy(&v, p + 2 * i, 2);
        return v;
    }
    if (width == 4) {
        uint32_t v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    return (int64_t)get_u64(p, i);
}

/* A pack_table blob's header and arrays; -1 if it is not one (sizes that do not add up, long
 * words of at most 15 bytes or whose chunks are not the table's). */
static int parse_table(const uint8_t *p, int64_t len, Table *t)
{
    int64_t h[7];
    if (len < 56)
        return -1;
    memcpy(h, p, sizeof h);
    memset(t, 0, sizeof *t);
    t->ns = h[0], t->n = h[1], t->nlong = h[2], t->nchunks = h[3];
    t->nbytes = h[4], t->nparts = h[5], t->width = h[6];
    if (t->width != 2 && t->width != 4 && t->width != 8)
        return -1;
    if (t->ns < 0 || t->n < 0 || t->nlong < 0 || t->nchunks < 0 || t->ns > len || t->n > len ||
        t->nlong > len || t->nchunks > len)
        return -1;
    if (56 + 8 * t->ns + 16 * t->n + t->width * (t->ns + t->n) + 24 * t->nlong +
        8 * t->nchunks != len)
        return -1;
    t->short_lo = p + 56;
    t->lo = t->short_lo + 8 * t->ns;
    t->hi = t->lo + 8 * t->n;
    t->short_counts = t->hi + 8 * t->n;
    t->counts = t->short_counts + t->width * t->ns;
    t->long_counts = t->counts + t->width * t->n;
    t->long_lens = t->long_counts + 8 * t->nlong;
    t->long_hashes = t->long_lens + 8 * t->nlong;
    t->chunks = t->long_hashes + 8 * t->nlong;
    int64_t chunks = 0;
    for (int64_t i = 0; i < t->nlong; i++) {
        int64_t k = (int64_t)get_u64(t->long_lens, i);
        if (k <= 15 || k > 8 * len)
            return -1;
        chunks += (k + 7) / 8;
    }
    return chunks == t->nchunks ? 0 : -1;
}

/* An empty table of `slots` slots (a power of two, at most 2**32), the words kept; -1: memory. */
static int sums_size(Reducer *z, size_t slots)
{
    if (slots > ((size_t)1 << 32) ||
        reserve((void **)&z->slots, &z->nslots, slots, sizeof(uint64_t)) < 0 ||
        reserve((void **)&z->words, &z->nwords, slots / 2 + 1, sizeof(Word)) < 0)
        return -1;
    memset(z->slots, 0, slots * sizeof(uint64_t));
    z->mask = slots - 1;
    return 0;
}

static int sums_grow(Reducer *z)
{
    if (sums_size(z, 2 * (z->mask + 1)) < 0)
        return -1;
    for (size_t i = 0; i < z->n; i++) {
        size_t at = (size_t)z->words[i].h & z->mask;
        while (z->slots[at])
            at = (at + 1) & z->mask;
        z->slots[at] = (z->words[i].h & 0xFFFFFFFF00000000ULL) | (uint64_t)(i + 1);
    }
    return 0;
}

/* Add count to the key (lo, hi) (chunks NULL) or to the long word (chunks, len); -1: memory. */
static inline int sums_add(Reducer *z, uint64_t h, uint64_t lo, uint64_t hi,
                           const uint8_t *chunks, int64_t len, int64_t count)
{
    uint64_t tag = h & 0xFFFFFFFF00000000ULL;
    size_t at = (size_t)h & z->mask;
    for (uint64_t slot; (slot = z->slots[at]); at = (at + 1) & z->mask) {
        if ((slot & 0xFFFFFFFF00000000ULL) != tag)
            continue;
        Word *w = &z->words[(slot & 0xFFFFFFFFULL) - 1];
        if (w->lo == lo && w->hi == hi && (chunks ? w->chunks && w->len == len &&
                                                    memcmp(w->chunks, chunks, (size_t)len) == 0
                                                  : !w->chunks)) {
            w->count += count;
            return 0;
        }
    }
    z->words[z->n++] = (Word){lo, hi, h, count, chunks ? len : (int64_t)(hi >> 56), chunks};
    z->slots[at] = tag | (uint64_t)z->n;
    return 2 * z->n > z->mask + 1 ? sums_grow(z) : 0;
}

static inline uint64_t key_hash(uint64_t lo, uint64_t hi)
{
    return mix64(lo * HA ^ hi * HB);
}

typedef struct {
    uint64_t h, lo, hi;
    const uint8_t *chunks;
    int64_t len, count;
} Row;

#define ROWS 16          /* rows hashed first, then added: their slots and words prefetched */

static int add_rows(Reducer *z, const Row *rows, int k)
{
    for (int j = 0; j < k; j++)
        __builtin_prefetch(&z->slots[(size_t)rows[j].h & z->mask]);
    for (int j = 0; j < k; j++) {
        uint64_t slot = z->slots[(size_t)rows[j].h & z->mask];
        if (slot)
            __builtin_prefetch(&z->words[(slot & 0xFFFFFFFFULL) - 1]);
    }
    for (int j = 0; j < k; j++) {
        uint64_t slot = z->slots[(size_t)rows[j].h & z->mask];
        if (slot && rows[j].chunks && z->words[(slot & 0xFFFFFFFFULL) - 1].chunks)
            __builtin_prefetch(z->words[(slot & 0xFFFFFFFFULL) - 1].chunks);
    }
    for (int j = 0; j < k; j++)
        if (sums_add(z, rows[j].h, rows[j].lo, rows[j].hi, rows[j].chunks, rows[j].len,
                     rows[j].count) < 0)
            return -1;
    return 0;
}

/* Row i of a table: its short words, then its two-word keys, then its long words (chunk: the
 * long word's chunks, the first long word's at first). */
static inline Row table_row(const Table *t, int64_t i, const uint8_t **chunk)
{
    if (i < t->ns) {
        uint64_t lo = get_u64(t->short_lo, i);
        uint64_t hi = (lo ? 8 - (uint64_t)(__builtin_clzll(lo) >> 3) : 1) << 56;
        return (Row){key_hash(lo, hi), lo, hi, NULL, 0, get_count(t->short_counts, t->width, i)};
    }
    if ((i -= t->ns) < t->n) {
        uint64_t lo = get_u64(t->lo, i), hi = get_u64(t->hi, i);
        return (Row){key_hash(lo, hi), lo, hi, NULL, 0, get_count(t->counts, t->width, i)};
    }
    i -= t->n;
    int64_t len = (int64_t)get_u64(t->long_lens, i);
    uint64_t lo = get_u64(*chunk, 0), hi = (get_u64(*chunk, 1) & PREFIX_HI) | 15ULL << 56;
    Row row = {get_u64(t->long_hashes, i), lo, hi, *chunk, len,
               (int64_t)get_u64(t->long_counts, i)};
    *chunk += (len + 7) & ~7;
    return row;
}

/* The words of one table added to the sums; -1: out of memory. */
static int add_table(Reducer *z, const Table *t)
{
    Row rows[ROWS];
    const uint8_t *chunk = t->chunks;
    int64_t n = t->ns + t->n + t->nlong;
    for (int64_t i = 0; i < n; i += ROWS) {
        int k = n - i < ROWS ? (int)(n - i) : ROWS;
        for (int j = 0; j < k; j++)
            rows[j] = table_row(t, i + j, &chunk);
        if (add_rows(z, rows, k) < 0)
            return -1;
    }
    return 0;
}

static inline const uint8_t *bytes_of(const Word *w)
{
    return w->chunks ? w->chunks : (const uint8_t *)&w->lo;
}

static inline int item_less(const Item *a, const Item *b, const Word *words)
{
    if (a->k0 != b->k0)
        return a->k0 < b->k0;
    if (a->k1 != b->k1)
        return a->k1 < b->k1;
    const Word *x = &words[a->w], *y = &words[b->w];
    int c = memcmp(bytes_of(x), bytes_of(y), (size_t)(x->len < y->len ? x->len : y->len));
    return c < 0 || (c == 0 && x->len < y->len);
}

/* Digit d of an item, 1-256, or 0 past the word's end: the bytes of k0, then of k1 (d < 16),
 * then the word's bytes from byte 15 on (rows equal on k0 and k1 have 15 bytes at least). */
static inline unsigned digit_of(const Item *it, int64_t d, const Word *words)
{
    if (d < 16)
        return 1 + (unsigned)(((d < 8 ? it->k0 : it->k1) >> (56 - 8 * (d & 7))) & 255);
    const Word *w = &words[it->w];
    return d - 1 < w->len ? 1 + (unsigned)bytes_of(w)[d - 1] : 0;
}

static inline int sort_key_less(const Item *a, const Item *b)
{   /* by the sort keys alone (no branch on k0 == b's k0) */
    unsigned __int128 x = (unsigned __int128)a->k0 << 64 | a->k1;
    unsigned __int128 y = (unsigned __int128)b->k0 << 64 | b->k1;
    return x < y;
}

static void insertion_sort(Item *a, int64_t n, const Word *words)
{
    for (int64_t i = 1; i < n; i++) {
        Item x = a[i];
        int64_t j = i;
        while (j > 0 && (sort_key_less(&x, &a[j - 1]) ||
                         (x.k0 == a[j - 1].k0 && x.k1 == a[j - 1].k1 &&
                          item_less(&x, &a[j - 1], words)))) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

static void merge_sort(Item *a, Item *tmp, int64_t n, const Word *words)
{
    if (n <= 16) {
        insertion_sort(a, n, words);
        return;
    }
    int64_t h = n / 2, i = 0, j = h, k = 0;
    merge_sort(a, tmp, h, words);
    merge_sort(a + h, tmp, n - h, words);
    while (i < h && j < n)
        tmp[k++] = item_less(&a[j], &a[i], words) ? a[j++] : a[i++];
    while (i < h)
        tmp[k++] = a[i++];
    memcpy(a, tmp, (size_t)k * sizeof(Item));
}

#define SMALL_SORT 32
#define MAX_LEVEL 48     /* deeper (words sharing long prefixes): a merge sort (bounded stack) */

/* Order a[0:n], whose first d digits are equal, by item_less (tmp: n items). */
static void msd_sort(Item *a, Item *tmp, int64_t n, int64_t d, int level, const Word *words)
{
    uint32_t count[257], at[257];
    while (n > SMALL_SORT) {
        if (level > MAX_LEVEL) {
            merge_sort(a, tmp, n, words);
            return;
        }
        memset(count, 0, sizeof count);
        for (int64_t i = 0; i < n; i++)
            count[digit_of(&a[i], d, words)]++;
        unsigned only = digit_of(&a[0], d, words);
        if (count[only] == (uint32_t)n) {
            if (only == 0)
                return;          /* the same bytes twice: not distinct words */
            d++;
            continue;
        }
        uint32_t sum = 0;
        for (int b = 0; b < 257; b++) {
            at[b] = sum;
            sum += count[b];
        }
        for (int64_t i = 0; i < n; i++)
            tmp[at[digit_of(&a[i], d, words)]++] = a[i];
        memcpy(a, tmp, (size_t)n * sizeof(Item));
        int64_t start = count[0];
        for (int b = 1; b < 257; b++) {
            if (count[b] > 1)
                msd_sort(a + start, tmp, count[b], d + 1, level + 1, words);
            start += count[b];
        }
        return;
    }
    insertion_sort(a, n, words);
}

static inline int64_t count_of(const Item *it, const Word *words)
{
    return it->c == UINT32_MAX ? words[it->w].count : (int64_t)it->c;
}

/* The words as items ordered by bytes (z->items); -1: memory. *line_bytes, *word_bytes,
 * *total: the lines' bytes, the words' bytes, the counts' sum. */
static int by_bytes(Reducer *z, int64_t *line_bytes, int64_t *word_bytes, int64_t *total)
{
    size_t n = z->n;
    if (reserve((void **)&z->items, &z->nitems, n + 1, sizeof(Item)) < 0 ||
        reserve((void **)&z->tmp, &z->ntmp, n + 1, sizeof(Item)) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const Word *w = &z->words[i];
        uint32_t c = (uint64_t)w->count < UINT32_MAX ? (uint32_t)w->count : UINT32_MAX;
        z->items[i] = (Item){__builtin_bswap64(w->lo), __builtin_bswap64(w->hi), (uint32_t)i, c};
        *line_bytes += w->len + n_digits((uint64_t)w->count) + 2;
        *word_bytes += w->len;
        *total += w->count;
    }
    msd_sort(z->items, z->tmp, (int64_t)n, 0, 0, z->words);
    return 0;
}

#define FEW 4096         /* counts below this are ordered by one counting sort */

/* Stable merge sort of items by count descending (tmp: n items). */
static void sort_by_count(Item *a, Item *tmp, int64_t n, const Word *words)
{
    if (n < 2)
        return;
    int64_t h = n / 2, i = 0, j = h, k = 0;
    sort_by_count(a, tmp, h, words);
    sort_by_count(a + h, tmp, n - h, words);
    while (i < h && j < n)
        tmp[k++] = count_of(&a[j], words) > count_of(&a[i], words) ? a[j++] : a[i++];
    while (i < h)
        tmp[k++] = a[i++];
    memcpy(a, tmp, (size_t)k * sizeof(Item));
}

/* The items (ordered by bytes) into z->tmp by count descending, stable: a counting sort of
 * the counts below FEW after the larger ones, merge-sorted in z->items; -1: memory. */
static int by_count(Reducer *z)
{
    int64_t n = (int64_t)z->n, big = 0;
    uint32_t at[FEW];
    memset(at, 0, sizeof at);
    for (int64_t i = 0; i < n; i++) {
        if (z->items[i].c < FEW)
            at[z->items[i].c]++;
        else
            big++;
    }
    uint32_t sum = (uint32_t)big;
    for (int c = FEW - 1; c >= 0; c--) {
        uint32_t k = at[c];
        at[c] = sum;
        sum += k;
    }
    int64_t nbig = 0;
    for (int64_t i = 0; i < n; i++) {
        if (z->items[i].c < FEW)
            z->tmp[at[z->items[i].c]++] = z->items[i];
        else
            z->tmp[nbig++] = z->items[i];
    }
    sort_by_count(z->tmp, z->items, big, z->words);
    return 0;
}

#define AHEAD 16         /* rows ahead whose long words write_run_content prefetches */

static inline void put_u64(char *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

/* The bytes of an item's word at line (len of them, and up to 15 more that the line will
 * overwrite while end - line allows: 8-byte stores, no memcpy call per word); its length. */
static inline int64_t put_word(char *line, const char *end, const Item *it, const Word *words)
{
    int64_t len = (int64_t)(it->k1 & 255);
    if (len == 15 && words[it->w].chunks) {
        const Word *w = &words[it->w];
        len = w->len;
        if (end - line >= ((len + 7) & ~7))
            for (int64_t at = 0; at < len; at += 8)
                put_u64(line + at, get_u64(w->chunks, at / 8));
        else
            memcpy(line, w->chunks, (size_t)len);
    } else if (end - line >= 16) {
        put_u64(line, __builtin_bswap64(it->k0));
        put_u64(line + 8, __builtin_bswap64(it->k1));
    } else {
        uint64_t key[2] = {__builtin_bswap64(it->k0), __builtin_bswap64(it->k1)};
        memcpy(line, key, (size_t)len);
    }
    return len;
}

/* The run file's content of the ranked words (z->tmp; see reduce_run): size bytes. */
static void write_run_content(uint8_t *out, int64_t size, const Reducer *z)
{
    int64_t n = (int64_t)z->n, line_end = 0, word_end = 0;
    int64_t *cols = (int64_t *)(void *)out;      /* malloc's: aligned */
    char *line = (char *)(out + 8 + 24 * n);
    const char *end = (const char *)out + size;
    const Item *items = z->tmp;
    cols[0] = n;
    for (int64_t i = 0; i < n; i++) {
        if (i + 2 * AHEAD < n && (items[i + 2 * AHEAD].k1 & 255) == 15)
            __builtin_prefetch(&z->words[items[i + 2 * AHEAD].w]);
        if (i + AHEAD < n && (items[i + AHEAD].k1 & 255) == 15 &&
            z->words[items[i + AHEAD].w].chunks)
            __builtin_prefetch(z->words[items[i + AHEAD].w].chunks);
        const Item *it = &items[i];
        int64_t len = put_word(line, end, it, z->words), count = count_of(it, z->words);
        line[len] = '\t';
        int k = decimal((uint64_t)count, line + len + 1);
        line[len + 1 + k] = '\n';
        line += len + k + 2;
        line_end += len + k + 2;
        word_end += len;
        cols[1 + i] = line_end;
        cols[1 + n + i] = word_end;
        cols[1 + 2 * n + i] = count;
    }
}

static void release_tables(Py_buffer *views, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        PyBuffer_Release(&views[i]);
    free(views);
}

/* The tables of a sequence of pack_table blobs (their buffers held in views); -1 with an error
 * set (views released). *rows: the most words of one table; *nbytes, *nparts: see reduce_run. */
static int get_tables(PyObject *seq, Py_buffer *views, Table *tables, int64_t *rows,
                      int64_t *nbytes, int64_t *nparts)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i), &views[i], PyBUF_SIMPLE) < 0) {
            release_tables(views, i);
            return -1;
        }
        Table *t = &tables[i];
        if (parse_table(views[i].buf, (int64_t)views[i].len, t) < 0) {
            PyErr_Format(PyExc_ValueError, "reduce_run: table %zd (%zd bytes) is not a "
                         "mapreduce.pack_table blob", i, views[i].len);
            release_tables(views, i + 1);
            return -1;
        }
        if (t->ns + t->n + t->nlong > *rows)
            *rows = t->ns + t->n + t->nlong;
        *nbytes += t->nbytes;
        *nparts = i == 0 || t->nparts > *nparts ? t->nparts : *nparts;
    }
    return 0;
}

/* Sum the tables and rank their words (z->tmp); -1: out of memory. */
static int sum_and_rank(Reducer *z, const Table *tables, Py_ssize_t nt, int64_t rows,
                        int64_t *sizes)
{
    size_t slots = 1024, want = 2 * ((size_t)rows > z->last ? (size_t)rows : z->last);
    while (slots < want)
        slots <<= 1;
    z->n = 0;
    if (sums_size(z, slots) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < nt; i++)
        if (add_table(z, &tables[i]) < 0)
            return -1;
    z->last = z->n;
    if (by_bytes(z, &sizes[0], &sizes[1], &sizes[2]) < 0)
        return -1;
    return by_count(z);
}

#define KEEP_BYTES ((size_t)96 << 20)    /* a larger workspace is freed after its call */

/* Free z's arrays (those of the shared workspace only when over KEEP_BYTES). */
static void reducer_free(Reducer *z, int keep)
{
    size_t size = z->nslots * sizeof(uint64_t) + z->nwords * sizeof(Word) +
                  (z->nitems + z->ntmp) * sizeof(Item) + z->nout;
    if (keep && size <= KEEP_BYTES)
        return;
    free(z->slots);
    free(z->words);
    free(z->items);
    free(z->tmp);
    free(z->out);
    *z = (Reducer){.last = z->last, .busy = z->busy};
}

/* reduce_run's work once the tables are read: the run as a bytes object, in a tuple. */
/* Write buf[0:n] to fd; -1 with errno set. */
static int write_all(int fd, const uint8_t *buf, size_t n)
{
    while (n) {
        ssize_t k = write(fd, buf, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        buf += k;
        n -= (size_t)k;
    }
    return 0;
}

/* reduce_run's work once the tables are read: the run written to fd; the figures as a tuple. */
static PyObject *ranked_run(Reducer *z, const Table *tables, Py_ssize_t nt, int64_t rows,
                            int64_t nbytes, int64_t nparts, int fd)
{
    int64_t sizes[3] = {0, 0, 0};          /* line bytes, word bytes, total count */
    int bad, err = 0;
    Py_BEGIN_ALLOW_THREADS
    bad = sum_and_rank(z, tables, nt, rows, sizes);
    int64_t size = 8 + 24 * (int64_t)z->n + sizes[0];
    if (!bad)
        bad = reserve((void **)&z->out, &z->nout, (size_t)size, 1);
    if (!bad) {
        write_run_content(z->out, size, z);
        if (write_all(fd, z->out, (size_t)size) < 0) {
            bad = 1;
            err = errno;
        }
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        errno = err;
        return err ? PyErr_SetFromErrno(PyExc_OSError) : PyErr_NoMemory();
    }
    return Py_BuildValue("(LLLLLL)", (long long)z->n, (long long)sizes[0], (long long)sizes[1],
                         (long long)nbytes, (long long)nparts, (long long)sizes[2]);
}

static PyObject *reduce_run(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *arg;
    int fd;
    if (!PyArg_ParseTuple(args, "Oi", &arg, &fd))
        return NULL;
    PyObject *seq = PySequence_Fast(arg, "reduce_run: tables must be a sequence of blobs");
    if (!seq)
        return NULL;
    Py_ssize_t nt = PySequence_Fast_GET_SIZE(seq);
    Py_buffer *views = calloc((size_t)(nt ? nt : 1), sizeof(Py_buffer));
    Table *tables = malloc((size_t)(nt ? nt : 1) * sizeof(Table));
    int64_t rows = 0, nbytes = 0, nparts = 1;
    PyObject *result = NULL;
    if (!views || !tables) {
        free(views);
        PyErr_NoMemory();
    } else if (get_tables(seq, views, tables, &rows, &nbytes, &nparts) == 0) {
        Reducer own = {0}, *z = &own;
        if (!shared_reducer.busy) {
            z = &shared_reducer;
            z->busy = 1;
        }
        result = ranked_run(z, tables, nt, rows, nbytes, nparts, fd);
        reducer_free(z, z == &shared_reducer);
        z->busy = 0;
        release_tables(views, nt);
    }
    free(tables);
    Py_DECREF(seq);
    return result;
}


/* merge_rows(runs) -> (lines, words, word_ends, counts): sortedruns.merge_range's rows in one
 * pass. Each run is a tuple (counts, line_ends, word_ends, lines, line_start, word_start):
 * rows a..b-1 of a run file (sortedruns.Run), in order by count descending, then word bytes
 * (a row's word is the first bytes of its line: lines[line_ends[i - 1] - line_start:],
 * line_ends[-1] and word_ends[-1] being line_start and word_start). The runs are merged
 * through a binary heap of their next rows, keyed by the count and the first 15 bytes of the
 * word (sortedruns._prefix_keys; the bytes compared where those tie); a run out of order
 * raises ValueError. The output is the lines and the words end to end (bytearrays), the
 * words' ends from 0 and the counts (bytes of int64), in merged order. */

typedef struct {
    const int64_t *count, *line_end, *word_end;
    const uint8_t *lines, *lines_end;
    int64_t line_start, word_start, n, i;    /* i: the run's next row */
} MergeRun;

static inline int64_t run_line_at(const MergeRun *r, int64_t i)
{
    return (i ? r->line_end[i - 1] : r->line_start) - r->line_start;
}

static inline int64_t run_word_len(const MergeRun *r, int64_t i)
{
    return r->word_end[i] - (i ? r->word_end[i - 1] : r->word_start);
}

/* Whether row i of run a goes before row j of run b. */
static inline int row_less(const MergeRun *a, int64_t i, const MergeRun *b, int64_t j)
{
    if (a->count[i] != b->count[j])
        return a->count[i] > b->count[j];
    int64_t la = run_word_len(a, i), lb = run_word_len(b, j);
    int c = memcmp(a->lines + run_line_at(a, i), b->lines + run_line_at(b, j),
                   (size_t)(la < lb ? la : lb));
    return c < 0 || (c == 0 && la < lb);
}

typedef struct {             /* a run's next row: its keys (count as ~count: ascending) */
    uint64_t k0, lo, hi;
    int64_t run;
} Head;

static inline Head head_of(const MergeRun *runs, int64_t k)
{
    const MergeRun *r = &runs[k];
    const uint8_t *p = r->lines + run_line_at(r, r->i);
    int64_t len = run_word_len(r, r->i);
    uint64_t lo = load_le(p, len, r->lines_end), hi = (uint64_t)(len < 15 ? len : 15) << 56;
    if (len > 8)
        hi |= load_le(p + 8, len < 15 ? len - 8 : 7, r->lines_end);
    return (Head){~(uint64_t)r->count[r->i], __builtin_bswap64(lo), __builtin_bswap64(hi), k};
}

static inline int head_less(const Head *a, const Head *b, const MergeRun *runs)
{
    if (a->k0 != b->k0)
        return a->k0 < b->k0;
    if (a->lo != b->lo)
        return a->lo < b->lo;
    if (a->hi != b->hi)
        return a->hi < b->hi;
    return row_less(&runs[a->run], runs[a->run].i, &runs[b->run], runs[b->run].i);
}

/* Whether a run's row i (its head a) goes before its row i + 1 (head b). */
static inline int in_order(const Head *a, const Head *b, const MergeRun *r, int64_t i)
{
    if (a->k0 != b->k0)
        return a->k0 < b->k0;
    if (a->lo != b->lo)
        return a->lo < b->lo;
    if (a->hi != b->hi)
        return a->hi < b->hi;
    return row_less(r, i, r, i + 1);
}

static void sift_down(Head *heap, int n, int at, const MergeRun *runs)
{
    Head x = heap[at];
    for (;;) {
        int c = 2 * at + 1;
        if (c >= n)
            break;
        if (c + 1 < n && head_less(&heap[c + 1], &heap[c], runs))
            c++;
        if (!head_less(&heap[c], &x, runs))
            break;
        heap[at] = heap[c];
        at = c;
    }
    heap[at] = x;
}

typedef struct {
    uint8_t *lines, *words, *lines_end, *words_end;
    int64_t *word_ends, *counts;
} MergeOut;

/* memcpy(dst, src, len), by two 8-byte moves when len <= 16 and both buffers have 16 bytes
 * left (the bytes after len are overwritten later, by the next row's). */
static inline void copy_short(uint8_t *dst, const uint8_t *dst_end, const uint8_t *src,
                              const uint8_t *src_end, int64_t len)
{
    if (len <= 16 && dst_end - dst >= 16 && src_end - src >= 16) {
        uint64_t a, b;
        memcpy(&a, src, 8);
        memcpy(&b, src + 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + 8, &b, 8);
    } else {
        memcpy(dst, src, (size_t)len);
    }
}

/* Merge the runs into out; -1: a run out of order. */
static int merge_heap(MergeRun *runs, int nruns, Head *heap, MergeOut *o)
{
    int n = 0;
    for (int k = 0; k < nruns; k++)
        if (runs[k].n)
            heap[n++] = head_of(runs, k);
    for (int k = n / 2 - 1; k >= 0; k--)
        sift_down(heap, n, k, runs);
    int64_t row = 0, line_at = 0, word_at = 0;
    while (n) {
        MergeRun *r = &runs[heap[0].run];
        int64_t i = r->i, at = run_line_at(r, i), len = r->line_end[i] - r->line_start - at;
        int64_t wl = run_word_len(r, i);
        copy_short(o->lines + line_at, o->lines_end, r->lines + at, r->lines_end, len);
        copy_short(o->words + word_at, o->words_end, r->lines + at, r->lines_end, wl);
        line_at += len;
        word_at += wl;
        o->word_ends[row] = word_at;
        o->counts[row++] = r->count[i];
        Head last = heap[0];
        if (++r->i == r->n) {
            heap[0] = heap[--n];
        } else {
            heap[0] = head_of(runs, last.run);
            if (!in_order(&last, &heap[0], r, i))
                return -1;
        }
        if (n)
            sift_down(heap, n, 0, runs);
    }
    return 0;
}

/* One run's tuple read into r (its buffers held in views[0:4]); -1 with an error set. */
static int get_merge_run(PyObject *t, MergeRun *r, Py_buffer *views, Py_ssize_t k)
{
    long long line_start, word_start;
    memset(views, 0, 4 * sizeof(Py_buffer));
    if (!PyArg_ParseTuple(t, "y*y*y*y*LL;merge_rows: a run is (counts, line_ends, word_ends, "
                          "lines, line_start, word_start)", &views[0], &views[1], &views[2],
                          &views[3], &line_start, &word_start))
        return -1;
    int64_t n = views[0].len / 8;
    *r = (MergeRun){views[0].buf, views[1].buf, views[2].buf, views[3].buf,
                    (const uint8_t *)views[3].buf + views[3].len, line_start, word_start, n, 0};
    int bad = views[0].len % 8 || views[1].len != views[0].len || views[2].len != views[0].len;
    int64_t line = line_start, word = word_start;
    for (int64_t i = 0; i < n && !bad; i++) {      /* ends in order, words within lines */
        bad = r->line_end[i] < line || r->word_end[i] < word ||
              r->word_end[i] - word > r->line_end[i] - line;
        line = r->line_end[i];
        word = r->word_end[i];
    }
    if (bad || line - line_start > views[3].len) {
        PyErr_Format(PyExc_ValueError, "merge_rows: run %zd: its arrays do not describe its "
                     "lines", k);
        return -1;
    }
    return 0;
}

static void release_views(Py_buffer *views, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (views[i].obj)
            PyBuffer_Release(&views[i]);
}

/* The runs of merge_rows' argument read into runs (buffers in views); -1 with an error set.
 * sizes: the rows, line bytes and word bytes of all of them. */
static int get_merge_runs(PyObject *seq, MergeRun *runs, Py_buffer *views, int64_t *sizes)
{
    Py_ssize_t nr = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t k = 0; k < nr; k++) {
        MergeRun *r = &runs[k];
        if (get_merge_run(PySequence_Fast_GET_ITEM(seq, k), r, views + 4 * k, k) < 0)
            return -1;
        sizes[0] += r->n;
        sizes[1] += r->n ? r->line_end[r->n - 1] - r->line_start : 0;
        sizes[2] += r->n ? r->word_end[r->n - 1] - r->word_start : 0;
    }
    return 0;
}

static PyObject *merge_rows(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *arg, *out[4] = {NULL, NULL, NULL, NULL}, *result = NULL;
    if (!PyArg_ParseTuple(args, "O", &arg))
        return NULL;
    PyObject *seq = PySequence_Fast(arg, "merge_rows: runs must be a sequence of tuples");
    if (!seq)
        return NULL;
    Py_ssize_t nr = PySequence_Fast_GET_SIZE(seq);
    MergeRun *runs = calloc((size_t)(nr ? nr : 1), sizeof(MergeRun));
    Py_buffer *views = calloc(4 * (size_t)(nr ? nr : 1), sizeof(Py_buffer));
    Head *heap = malloc((size_t)(nr ? nr : 1) * sizeof(Head));
    int64_t sizes[3] = {0, 0, 0};
    MergeOut o;
    if (!runs || !views || !heap || nr > (1 << 30)) {
        PyErr_NoMemory();
        goto done;
    }
    if (get_merge_runs(seq, runs, views, sizes) < 0)
        goto done;
    out[0] = PyByteArray_FromStringAndSize(NULL, sizes[1]);
    out[1] = PyByteArray_FromStringAndSize(NULL, sizes[2]);
    out[2] = new_array(sizes[0], (void **)&o.word_ends);
    out[3] = new_array(sizes[0], (void **)&o.counts);
    if (!out[0] || !out[1] || !out[2] || !out[3])
        goto done;
    o.lines = (uint8_t *)PyByteArray_AS_STRING(out[0]);
    o.words = (uint8_t *)PyByteArray_AS_STRING(out[1]);
    o.lines_end = o.lines + sizes[1];
    o.words_end = o.words + sizes[2];
    int bad;
    Py_BEGIN_ALLOW_THREADS
    bad = merge_heap(runs, (int)nr, heap, &o);
    Py_END_ALLOW_THREADS
    if (bad)
        PyErr_SetString(PyExc_ValueError, "merge_rows: a run's rows are not in order");
    else
        result = PyTuple_Pack(4, out[0], out[1], out[2], out[3]);
done:
    for (int k = 0; k < 4; k++)
        Py_XDECREF(out[k]);
    if (views)
        release_views(views, 4 * nr);
    free(runs);
    free(views);
    free(heap);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"merge_rows", merge_rows, METH_VARARGS,
     "merge_rows(runs) -> (lines, words, word_ends, counts): rows of sorted runs, each a tuple "
     "(counts, line_ends, word_ends, lines, line_start, word_start) of a run file's rows, "
     "merged by count descending, then word bytes: their lines and words end to end "
     "(bytearrays), the words' ends from 0 and the counts (bytes of int64)."},
    {"reduce_run", reduce_run, METH_VARARGS,
     "reduce_run(tables, fd) -> (rows, line_bytes, word_bytes, nbytes, nparts, total): the "
     "sum of mapreduce.pack_table blobs, ranked by count descending then bytes, written to "
     "the open file fd as a sortedruns run file; nbytes: the tables' input bytes summed, "
     "nparts: the largest of their partition counts (1: none), total: the counts' sum."},
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
    "Wordcount's kernels: tokenise like bytes.split() and count the distinct words (the map), "
    "sum and rank word tables into a run file (the reducer), and their segment copies.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__wordcount(void)
{
    return PyModule_Create(&module);
}
