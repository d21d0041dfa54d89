/* Wordcount's map kernel: tokenise a byte buffer exactly like bytes.split() and count its
 * distinct words in one pass, then emit them as the arrays of a word table
 * (jobs/mapreduce.py, ``_table``). Plain C99 and the CPython C API; the GIL is released
 * while the buffer is scanned.
 *
 * count(buffer) -> (short, short_counts, lo, hi, counts,
 *                   long_chunks, long_lens, long_counts, tokens)
 *
 * Each of the first eight is a bytes object holding a little-endian uint64 / int64 array
 * (np.frombuffer), in the order of the words' first occurrence; ``tokens`` is an int.
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
 * token's hash and its entry number + 1 (0: empty); an entry holds the key words (lo, hi),
 * its hash, where the word first occurs, its length and its count. A word of at most 16 bytes is
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

typedef struct {
    uint64_t lo, hi, hash;
    int64_t start, len, count, kind;     /* kind: SHORT, TWO (two-word key) or LONG */
} Entry;

enum { SHORT, TWO, LONG };

typedef struct {
    uint64_t *slots;
    size_t nslots;           /* allocated slots (a power of two) */
    Entry *entries;
    size_t nentries_cap;
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

/* Double the table (mask + 1 slots in use -> 2x), reinserting every entry. */
static int grow(Workspace *ws, size_t *mask, size_t n)
{
    size_t cap = 2 * (*mask + 1);
    if (ws_reserve(ws, cap, cap / 2 + 1) < 0)
        return -1;
    memset(ws->slots, 0, cap * sizeof(uint64_t));
    *mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        uint64_t h = ws->entries[i].hash;
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
    if (e->len != len || e->lo != lo || e->hi != hi)
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
static inline int64_t kind_of(const uint8_t *buf, const Token *t)
{
    if (t->len <= 8 && (t->len == 1 || buf[t->start + t->len - 1] != 0))
        return SHORT;
    return t->len <= 15 ? TWO : LONG;
}

/* Add one token to the table; -1: out of memory (or over 2**32 - 1 distinct words). */
static inline int add_token(Workspace *ws, const uint8_t *buf, const Token *t, size_t *mask,
                            size_t *nent)
{
    uint64_t tag = t->h & 0xFFFFFFFF00000000ULL;
    size_t at = (size_t)(t->h >> 32) & *mask;
    while (1) {
        uint64_t s = ws->slots[at];
        if (s == 0) {
            if (*nent >= 0xFFFFFFFFULL)     /* a slot holds a 32-bit entry number */
                return -1;
            Entry *e = &ws->entries[(*nent)++];
            *e = (Entry){t->lo, t->hi, t->h, t->start, t->len, 1, kind_of(buf, t)};
            ws->slots[at] = tag | (uint64_t)*nent;
            if (2 * *nent > *mask + 1)
                return grow(ws, mask, *nent);
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
 * vocabulary is far below its tokens: a small table stays in the cache) and doubles. */
static Py_ssize_t scan(Workspace *ws, const uint8_t *buf, int64_t n, int64_t *tokens)
{
    size_t cap = 1024;
    while (cap < (size_t)(n / 64) && cap < ((size_t)1 << 22))
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
            if (add_token(ws, buf, &t[j], &mask, &nent) < 0)
                return -1;
    }
    *tokens = ntok;
    return (Py_ssize_t)nent;
}

typedef struct {
    uint64_t *short_lo, *lo, *hi, *chunks;
    int64_t *short_counts, *counts, *long_lens, *long_counts;
} Out;

static void emit(const Workspace *ws, size_t nent, const uint8_t *buf, const uint8_t *buf_end,
                 Out *o)
{
    size_t ns = 0, nt = 0, nl = 0, nc = 0;
    for (size_t k = 0; k < nent; k++) {
        const Entry *e = &ws->entries[k];
        if (e->kind == SHORT) {
            o->short_lo[ns] = e->lo;
            o->short_counts[ns++] = e->count;
        } else if (e->kind == TWO) {
            o->lo[nt] = e->lo;
            o->hi[nt] = e->hi;
            o->counts[nt++] = e->count;
        } else {
            const uint8_t *p = buf + e->start;
            for (int64_t at = 0; at < e->len; at += 8)
                o->chunks[nc++] = load_le(p + at, e->len - at, buf_end);
            o->long_lens[nl] = e->len;
            o->long_counts[nl++] = e->count;
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

static PyObject *build(const Workspace *ws, size_t nent, const uint8_t *buf, int64_t n,
                       int64_t tokens)
{
    const uint8_t *buf_end = buf + n;
    Py_ssize_t ns = 0, nt = 0, nl = 0, nc = 0;
    for (size_t k = 0; k < nent; k++) {
        const Entry *e = &ws->entries[k];
        if (e->kind == SHORT)
            ns++;
        else if (e->kind == TWO)
            nt++;
        else {
            nl++;
            nc += (e->len + 7) / 8;
        }
    }
    Out o;
    PyObject *a[8] = {0};
    Py_ssize_t sizes[8] = {ns, ns, nt, nt, nt, nc, nl, nl};
    void **where[8] = {(void **)&o.short_lo, (void **)&o.short_counts, (void **)&o.lo,
                       (void **)&o.hi, (void **)&o.counts, (void **)&o.chunks,
                       (void **)&o.long_lens, (void **)&o.long_counts};
    for (int k = 0; k < 8; k++) {
        a[k] = new_array(sizes[k], where[k]);
        if (!a[k]) {
            for (int j = 0; j < k; j++)
                Py_DECREF(a[j]);
            return NULL;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    emit(ws, nent, buf, buf_end, &o);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(NNNNNNNNL)", a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7],
                         (long long)tokens);
}

static PyObject *count(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
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
                                        (int64_t)view.len, tokens);
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

/* merge_order: the order of rows by (count descending, lo, hi) when they are a few runs
 * already in that order end to end (a merge task's rows: the sorted runs of the reducers). */

typedef struct {
    const int64_t *count;
    const uint64_t *lo, *hi;
} Keys;

static inline int key_less(const Keys *k, int64_t a, int64_t b)
{
    if (k->count[a] != k->count[b])
        return k->count[a] > k->count[b];
    if (k->lo[a] != k->lo[b])
        return k->lo[a] < k->lo[b];
    return k->hi[a] < k->hi[b];
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
    Py_buffer cb, lb, hb;
    Py_ssize_t max_runs;
    if (!PyArg_ParseTuple(args, "y*y*y*n", &cb, &lb, &hb, &max_runs))
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
    Keys k = {cb.buf, lb.buf, hb.buf};
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
    return out;
}

static PyMethodDef methods[] = {
    {"count", count, METH_O,
     "count(buffer) -> (short, short_counts, lo, hi, counts, long_chunks, long_lens, "
     "long_counts, tokens): the distinct words of a byte buffer "
     "(bytes.split()) with their counts, as the arrays of a word table (bytes holding "
     "little-endian uint64/int64), in the order of first occurrence."},
    {"copy_segments", copy_segments, METH_VARARGS,
     "copy_segments(dst, dst_starts or None, src, src_starts, lens): dst[dst_starts[i]:]"
     "[:lens[i]] = src[src_starts[i]:][:lens[i]] for every i (int64 index arrays)."},
    {"chunk_bytes", chunk_bytes, METH_VARARGS,
     "chunk_bytes(pool, first, lens) -> bytearray: the first lens[i] bytes of the uint64 "
     "chunks from pool[first[i]], end to end (int64 index arrays)."},
    {"merge_order", merge_order, METH_VARARGS,
     "merge_order(counts, lo, hi, max_runs) -> bytearray of int64 rows by count descending "
     "(int64), then lo, then hi (uint64), when the rows are at most max_runs runs in that "
     "order end to end; else None."},
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
