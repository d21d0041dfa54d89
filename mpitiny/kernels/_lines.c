/* Line kernels of jobs/linesort.py and jobs/grep.py (mpitiny.kernels._lines).

   sort_lines(data, starts, lens, order[, scratch]): order <- the line numbers 0..n-1
       ordered by the lines' bytes (memcmp, then length: Python's bytes order), equal lines
       by line number. A most-significant-first radix sort: at depth d every line's key is
       its bytes d..d+6 (big-endian, zero past its end) and, in the low byte, how many bytes
       it has from d on (0-7, or 8 for "more than 7"); the keys are sorted stably (key_sort:
       by bytes, most significant first, two bytes at once for WIDE records and more, small
       buckets by insertion), then each run of equal keys with low byte 8 again at depth
       d + 7 (the largest run in a loop, the others recursively: the stack stays O(log n);
       its keys are read with the next lines' bytes prefetched: they are scattered). Groups
       of under SMALL lines by insertion sort (memcmp). Equal keys with a low byte under 8
       are equal lines, already in line-number order (the sort is stable). scratch
       (writable, at least 32 n + 16 bytes) holds the sort's records instead of a new
       allocation (whose pages the kernel would fault in again on every call).
   count_lines(data): the number of newlines.
   line_spans(data, starts, lens): the start and length (without its newline) of each
       newline-ended line of data, up to the arrays' length; returns how many. Both scan 16
       bytes at a time with SSE2 (a memchr per line cost ~20 ns on short lines).
   gather_lines(data, starts, lens, order, out): out <- the lines in that order, each followed
       by a newline (a line of up to 16 bytes by one 16-byte move where room allows; so in
       merge_runs), the next lines' bytes prefetched.
   run_points(run, lines, points, line_bytes, out): for a run of lines newline-ended lines
       (sorted: a map's output), whose cost up to line j is line_bytes * (j + 1) plus its
       bytes up to and including j's newline, of total C: for k = 1..points the first line
       whose cost reaches C k / points, once each, as (start, end, line number) in out (int64,
       3 per point); returns how many. One SSE2 scan for the newlines.
   merge_runs(runs, out): out <- the lines of the runs (each a buffer of lines sorted by bytes,
       every line ending with a newline) merged in bytes order (a binary heap of the runs);
       returns the number of lines.
   find_line_spans(data, literals, out): the lines (split at newlines) holding at least one of
       the literals (non-empty, no newline), in order, as (start, end) pairs in out (int64, 2
       per line, at most one per line); returns their number. With SSE2, 16 positions at a
       time are tested for each literal's first and last byte, the few that pass by memcmp;
       after a hit the scan goes on from the next line.
   span_lines(data, spans): the bytes data[start:end] of each (start, end) pair of spans
       (int64, checked to lie within data), as a list: grep's candidate lines, without a
       Python slice per line.

   Every loop runs without the GIL. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define SMALL 24
#define WIDE 32768

typedef struct { uint64_t key; uint64_t idx; } rec_t;

/* 8 bytes as a big-endian integer: comparing two such is comparing the bytes (memcmp). */
static inline uint64_t load_be64(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return w;
#else
    return __builtin_bswap64(w);
#endif
}

/* Copy len bytes from src to dst; when 16 bytes can be read at src and written at dst (the
   caller says how many bytes follow each), one 16-byte move, bytes past len included (the
   next line overwrites them): a memcpy call per short line cost more than the line. */
static inline void copy_line(uint8_t *dst, const uint8_t *src, size_t len, size_t dst_room,
                             size_t src_room)
{
    if (len <= 16 && dst_room >= 16 && src_room >= 16) {
        uint64_t w[2];
        memcpy(w, src, 16);
        memcpy(dst, w, 16);
    } else {
        memcpy(dst, src, len);
    }
}

typedef struct {
    const uint8_t *buf;
    int64_t size;
    const int64_t *starts;
    const int64_t *lens;
} lines_t;

static inline uint64_t key_at(const lines_t *L, uint64_t i, int64_t depth)
{
    int64_t at = L->starts[i] + depth, left = L->lens[i] - depth;
    int64_t take = left < 7 ? left : 7;
    uint64_t w = 0;
    if (at + 8 <= L->size) {
        w = load_be64(L->buf + at);
    } else {
        for (int64_t j = 0; j < take; j++)
            w |= (uint64_t)L->buf[at + j] << (56 - 8 * j);
    }
    w = take ? w & (~(uint64_t)0 << (64 - 8 * take)) : 0;
    return w | (uint64_t)(left < 8 ? left : 8);
}

static int cmp_lines(const lines_t *L, uint64_t a, uint64_t b, int64_t depth)
{
    int64_t la = L->lens[a] - depth, lb = L->lens[b] - depth;
    int c = memcmp(L->buf + L->starts[a] + depth, L->buf + L->starts[b] + depth,
                   (size_t)(la < lb ? la : lb));
    if (c)
        return c;
    if (la != lb)
        return la < lb ? -1 : 1;
    return a < b ? -1 : (a > b);
}

static void insertion_sort(const lines_t *L, rec_t *a, size_t n, int64_t depth)
{
    for (size_t i = 1; i < n; i++) {
        rec_t x = a[i];
        size_t j = i;
        while (j > 0 && cmp_lines(L, a[j - 1].idx, x.idx, depth) > 0) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

static void key_sort(rec_t *a, rec_t *tmp, size_t n);

/* key_sort's first pass for a large group (n >= WIDE): two bytes at once (bits sh..sh+15,
   65536 buckets), each bucket then by key_sort; one pass over the records fewer (a split of
   1.6 M lines of 1-7 bytes: prose). -1 when the counts could not be allocated. */
static int key_sort_wide(rec_t *a, rec_t *tmp, size_t n, int sh)
{
    uint32_t *at = calloc(65537, sizeof *at);
    if (!at)
        return -1;
    for (size_t i = 0; i < n; i++)
        at[((a[i].key >> sh) & 0xffff) + 1]++;
    for (int b = 0; b < 65536; b++)
        at[b + 1] += at[b];
    for (size_t i = 0; i < n; i++)
        tmp[at[(a[i].key >> sh) & 0xffff]++] = a[i];
    memcpy(a, tmp, n * sizeof *a);
    for (size_t b = 0, first = 0; b < 65536; first = at[b], b++)
        if (at[b] - first > 1 && sh > 0)
            key_sort(a + first, tmp + first, at[b] - first);
    free(at);
    return 0;
}

/* Records sorted by key, stably (equal keys keep their order): most significant byte first,
   from the first byte in which the keys differ, one counting pass and one scatter per byte,
   the buckets of under SMALL records by insertion. */
static void key_sort(rec_t *a, rec_t *tmp, size_t n)
{
    if (n < SMALL) {
        for (size_t i = 1; i < n; i++) {
            rec_t x = a[i];
            size_t j = i;
            for (; j > 0 && a[j - 1].key > x.key; j--)
                a[j] = a[j - 1];
            a[j] = x;
        }
        return;
    }
    uint64_t diff = 0, first_key = a[0].key;
    for (size_t i = 1; i < n; i++)
        diff |= a[i].key ^ first_key;
    if (!diff)
        return;
    int shift = (63 - __builtin_clzll(diff)) & ~7;     /* the first byte that differs */
    if (n >= WIDE && shift >= 8 && key_sort_wide(a, tmp, n, shift - 8) == 0)
        return;
    size_t count[256] = {0}, at[256], sum = 0;
    for (size_t i = 0; i < n; i++)
        count[(a[i].key >> shift) & 255]++;
    for (int b = 0; b < 256; b++) {
        at[b] = sum;
        sum += count[b];
    }
    for (size_t i = 0; i < n; i++)
        tmp[at[(a[i].key >> shift) & 255]++] = a[i];
    memcpy(a, tmp, n * sizeof *a);
    if (shift == 0)
        return;
    for (size_t b = 0, first = 0; b < 256; first += count[b], b++)
        if (count[b] > 1)
            key_sort(a + first, tmp + first, count[b]);
}

static void sort_group(const lines_t *L, rec_t *a, rec_t *tmp, size_t n, int64_t depth)
{
    for (;;) {
        if (n < SMALL) {
            insertion_sort(L, a, n, depth);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            if (depth && i + 16 < n) {          /* lines in sorted order: scattered */
                __builtin_prefetch(L->starts + a[i + 16].idx);
                __builtin_prefetch(L->lens + a[i + 16].idx);
            }
            if (depth && i + 8 < n)
                __builtin_prefetch(L->buf + L->starts[a[i + 8].idx] + depth);
            a[i].key = key_at(L, a[i].idx, depth);
        }
        key_sort(a, tmp, n);
        size_t big_at = 0, big_n = 0;
        for (size_t i = 0, j; i < n; i = j) {
            for (j = i + 1; j < n && a[j].key == a[i].key; j++)
                ;
            if (j - i < 2 || (a[i].key & 255) != 8)
                continue;
            if (j - i > big_n) {
                if (big_n)
                    sort_group(L, a + big_at, tmp + big_at, big_n, depth + 7);
                big_at = i;
                big_n = j - i;
            } else {
                sort_group(L, a + i, tmp + i, j - i, depth + 7);
            }
        }
        if (!big_n)
            return;
        a += big_at;
        tmp += big_at;
        n = big_n;
        depth += 7;
    }
}

/* ------------------------------------------------------------------ argument helpers */
static int get_buf(PyObject *obj, Py_buffer *view, int writable, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) {
        PyErr_Format(PyExc_TypeError, "_lines: %s must be a contiguous%s buffer", what,
                     writable ? " writable" : "");
        return -1;
    }
    return 0;
}

static void release(Py_buffer *views, int n)
{
    for (int i = 0; i < n; i++)
        if (views[i].obj)
            PyBuffer_Release(&views[i]);
}

/* data, starts, lens (int64), order (int64, writable): checks sizes and spans. */
static int line_args(PyObject *args, Py_buffer v[4], lines_t *L, Py_ssize_t *n, int write_order)
{
    PyObject *o[4];
    static const char *what[4] = {"data", "starts", "lens", "order"};
    memset(v, 0, 4 * sizeof *v);
    if (!PyArg_ParseTuple(args, "OOOO", &o[0], &o[1], &o[2], &o[3]))
        return -1;
    for (int i = 0; i < 4; i++)
        if (get_buf(o[i], &v[i], i == 3 && write_order, what[i]) < 0)
            return release(v, i), -1;
    *n = v[1].len / 8;
    if (v[1].len % 8 || v[2].len != v[1].len || v[3].len != v[1].len) {
        PyErr_SetString(PyExc_ValueError, "_lines: starts, lens and order must be int64 arrays "
                                          "of one length");
        return release(v, 4), -1;
    }
    L->buf = v[0].buf;
    L->size = v[0].len;
    L->starts = v[1].buf;
    L->lens = v[2].buf;
    for (Py_ssize_t i = 0; i < *n; i++)
        if (L->starts[i] < 0 || L->lens[i] < 0 || L->starts[i] + L->lens[i] > L->size) {
            PyErr_Format(PyExc_ValueError, "_lines: line %zd (start %lld, length %lld) is "
                         "outside the data (%zd bytes)", i, (long long)L->starts[i],
                         (long long)L->lens[i], v[0].len);
            return release(v, 4), -1;
        }
    return 0;
}

static PyObject *sort_lines(PyObject *self, PyObject *args)
{
    Py_buffer v[4], scratch = {0};
    lines_t L;
    Py_ssize_t n, nargs = PyTuple_GET_SIZE(args);
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "_lines.sort_lines: data, starts, lens, order[, scratch]");
        return NULL;
    }
    PyObject *four = PyTuple_GetSlice(args, 0, 4);
    if (!four)
        return NULL;
    int bad = line_args(four, v, &L, &n, 1);
    Py_DECREF(four);
    if (bad < 0)
        return NULL;
    size_t need = 2 * (size_t)(n ? n : 1) * sizeof(rec_t);
    rec_t *a = NULL, *tmp = NULL, *own = NULL;
    if (nargs == 5) {
        if (get_buf(PyTuple_GET_ITEM(args, 4), &scratch, 1, "scratch") < 0)
            return release(v, 4), NULL;
        if ((size_t)scratch.len < need + 16) {
            PyErr_Format(PyExc_ValueError, "_lines.sort_lines: scratch has %zd bytes, %zu "
                         "needed", scratch.len, need + 16);
            return release(v, 4), PyBuffer_Release(&scratch), NULL;
        }
        a = (rec_t *)(((uintptr_t)scratch.buf + 15) & ~(uintptr_t)15);
    } else {
        a = own = malloc(need);
        if (!own) {
            release(v, 4);
            return PyErr_NoMemory();
        }
    }
    tmp = a + (n ? n : 1);
    int64_t *order = v[3].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        a[i].idx = (uint64_t)i;
    sort_group(&L, a, tmp, (size_t)n, 0);
    for (Py_ssize_t i = 0; i < n; i++)
        order[i] = (int64_t)a[i].idx;
    Py_END_ALLOW_THREADS
    free(own);
    if (scratch.obj)
        PyBuffer_Release(&scratch);
    release(v, 4);
    Py_RETURN_NONE;
}

static PyObject *gather_lines(PyObject *self, PyObject *args)
{
    Py_buffer v[4], out = {0};
    lines_t L;
    Py_ssize_t n;
    PyObject *data, *starts, *lens, *ord, *dst;
    if (!PyArg_ParseTuple(args, "OOOOO", &data, &starts, &lens, &ord, &dst))
        return NULL;
    PyObject *four = Py_BuildValue("(OOOO)", data, starts, lens, ord);
    if (!four)
        return NULL;
    int bad = line_args(four, v, &L, &n, 0);
    Py_DECREF(four);
    if (bad < 0)
        return NULL;
    if (get_buf(dst, &out, 1, "out") < 0)
        return release(v, 4), NULL;
    const int64_t *order = v[3].buf;
    for (Py_ssize_t i = 0; i < n; i++)
        if (order[i] < 0 || order[i] >= n) {
            PyErr_Format(PyExc_ValueError, "_lines.gather_lines: order[%zd] = %lld is no line",
                         i, (long long)order[i]);
            return release(v, 4), PyBuffer_Release(&out), NULL;
        }
    uint8_t *o = out.buf, *o_end = o + out.len;
    int full = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + 16 < n) {                       /* the lines are scattered in data */
            __builtin_prefetch(L.starts + order[i + 16]);
            __builtin_prefetch(L.lens + order[i + 16]);
        }
        if (i + 8 < n)
            __builtin_prefetch(L.buf + L.starts[order[i + 8]]);
        int64_t k = order[i], len = L.lens[k];
        if (len + 1 > o_end - o) {
            full = 1;
            break;
        }
        copy_line(o, L.buf + L.starts[k], (size_t)len, (size_t)(o_end - o),
                  (size_t)(L.size - L.starts[k]));
        o[len] = '\n';
        o += len + 1;
    }
    Py_END_ALLOW_THREADS
    int64_t need = o - (uint8_t *)out.buf;
    if (full) {
        PyErr_Format(PyExc_ValueError, "_lines.gather_lines: out has %zd bytes, more needed",
                     out.len);
        return release(v, 4), PyBuffer_Release(&out), NULL;
    }
    release(v, 4);
    PyBuffer_Release(&out);
    return PyLong_FromLongLong(need);
}

/* The newlines of d[0..n): SSE2 compares 16 bytes at a time (a bit mask of the newlines, its
   bits taken one by one), else memchr. spans: where to put each line's start and length (up
   to room lines), or NULL to count only; returns the number of newlines seen (spans: of
   lines stored). */
static Py_ssize_t scan_newlines(const uint8_t *d, Py_ssize_t n, int64_t *starts, int64_t *lens,
                                Py_ssize_t room)
{
    Py_ssize_t count = 0, i = 0, line = 0;
#ifdef __SSE2__
    const __m128i nl = _mm_set1_epi8('\n');
    for (; i + 16 <= n; i += 16) {
        unsigned mask = (unsigned)_mm_movemask_epi8(
            _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(d + i)), nl));
        if (!starts) {
            count += __builtin_popcount(mask);
            continue;
        }
        while (mask) {
            Py_ssize_t at = i + __builtin_ctz(mask);
            if (count == room)
                return count;
            starts[count] = line;
            lens[count] = at - line;
            count++;
            line = at + 1;
            mask &= mask - 1;
        }
    }
#endif
    for (const uint8_t *p = d + i, *end = d + n; p < end; p++) {
        if (!(p = memchr(p, '\n', (size_t)(end - p))))
            break;
        if (starts) {
            if (count == room)
                return count;
            starts[count] = line;
            lens[count] = (p - d) - line;
            line = (p - d) + 1;
        }
        count++;
    }
    return count;
}

static PyObject *count_lines(PyObject *self, PyObject *arg)
{
    Py_buffer v = {0};
    if (get_buf(arg, &v, 0, "data") < 0)
        return NULL;
    Py_ssize_t n;
    Py_BEGIN_ALLOW_THREADS
    n = scan_newlines(v.buf, v.len, NULL, NULL, 0);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&v);
    return PyLong_FromSsize_t(n);
}

static PyObject *line_spans(PyObject *self, PyObject *args)
{
    PyObject *data_obj, *starts_obj, *lens_obj;
    Py_buffer v[3];
    memset(v, 0, sizeof v);
    if (!PyArg_ParseTuple(args, "OOO", &data_obj, &starts_obj, &lens_obj))
        return NULL;
    if (get_buf(data_obj, &v[0], 0, "data") < 0 || get_buf(starts_obj, &v[1], 1, "starts") < 0
        || get_buf(lens_obj, &v[2], 1, "lens") < 0)
        return release(v, 3), NULL;
    if (v[1].len != v[2].len || v[1].len % 8) {
        PyErr_SetString(PyExc_ValueError, "_lines.line_spans: starts and lens must be int64 "
                                          "arrays of one length");
        return release(v, 3), NULL;
    }
    Py_ssize_t n;
    Py_BEGIN_ALLOW_THREADS
    n = scan_newlines(v[0].buf, v[0].len, v[1].buf, v[2].buf, v[1].len / 8);
    Py_END_ALLOW_THREADS
    release(v, 3);
    return PyLong_FromSsize_t(n);
}

/* ------------------------------------------------------------------ a sorted run's points */
typedef struct {
    int64_t line_bytes, lines, line, start, next_k, points, total, found;
    int64_t *out;
} points_t;

/* Line number P->line ends at byte end: when its cost (line_bytes per line, plus bytes, up to
   and including it) reaches the next target, it is a point. */
static inline void point_at(points_t *P, int64_t end)
{
    int64_t cost = P->line_bytes * (P->line + 1) + end + 1;
    if (P->next_k <= P->points && cost * P->points >= P->total * P->next_k) {
        P->out[3 * P->found] = P->start;
        P->out[3 * P->found + 1] = end;
        P->out[3 * P->found + 2] = P->line;
        P->found++;
        while (P->next_k <= P->points && cost * P->points >= P->total * P->next_k)
            P->next_k++;
    }
    P->line++;
    P->start = end + 1;
}

static PyObject *run_points(PyObject *self, PyObject *args)
{
    PyObject *run_obj, *dst;
    long long lines, points, line_bytes;
    if (!PyArg_ParseTuple(args, "OLLLO", &run_obj, &lines, &points, &line_bytes, &dst))
        return NULL;
    Py_buffer run = {0}, out = {0};
    if (get_buf(run_obj, &run, 0, "run") < 0)
        return NULL;
    if (get_buf(dst, &out, 1, "out") < 0)
        return PyBuffer_Release(&run), NULL;
    if (points < 1 || lines < 0 || line_bytes < 0 || out.len < 24 * points) {
        PyErr_Format(PyExc_ValueError, "_lines.run_points: need points >= 1, lines and "
                     "line_bytes >= 0, out of 3 * points int64 (%lld points, %zd bytes)",
                     points, out.len);
        return PyBuffer_Release(&run), PyBuffer_Release(&out), NULL;
    }
    points_t P = {line_bytes, lines, 0, 0, 1, points, line_bytes * lines + run.len, 0, out.buf};
    const uint8_t *d = run.buf;
    Py_ssize_t n = run.len, i = 0;
    Py_BEGIN_ALLOW_THREADS
#ifdef __SSE2__
    const __m128i nl = _mm_set1_epi8('\n');
    for (; i + 16 <= n && P.line < lines; i += 16) {
        unsigned mask = (unsigned)_mm_movemask_epi8(
            _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(d + i)), nl));
        for (; mask && P.line < lines; mask &= mask - 1)
            point_at(&P, i + __builtin_ctz(mask));
    }
#endif
    for (; i < n && P.line < lines; i++)
        if (d[i] == '\n')
            point_at(&P, i);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&run);
    PyBuffer_Release(&out);
    if (P.line != lines) {
        PyErr_Format(PyExc_ValueError, "_lines.run_points: the run has %lld lines, not %lld",
                     (long long)P.line, lines);
        return NULL;
    }
    return PyLong_FromLongLong(P.found);
}

/* ------------------------------------------------------------------ merge of sorted runs */
/* A run's current line, with its key (as in key_at: bytes 0-6 and the length up to 8), so
   that most comparisons are one integer compare. */
typedef struct { uint64_t key; const uint8_t *line, *next, *end; size_t len; } cursor_t;

static inline int cursor_less(const cursor_t *a, const cursor_t *b)
{
    if (a->key != b->key)
        return a->key < b->key;
    if ((a->key & 255) < 8)
        return 0;                       /* equal lines */
    size_t m = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->line + 7, b->line + 7, m - 7);
    return c < 0 || (c == 0 && a->len < b->len);
}

static inline int cursor_step(cursor_t *c)
{
    if (c->next >= c->end)
        return 0;
    const uint8_t *nl = memchr(c->next, '\n', (size_t)(c->end - c->next));
    c->line = c->next;
    c->len = (size_t)(nl - c->next);
    c->next = nl + 1;
    size_t take = c->len < 7 ? c->len : 7;
    uint64_t w = 0;
    if (c->line + 8 <= c->end) {
        w = load_be64(c->line);
    } else {
        for (size_t j = 0; j < take; j++)
            w |= (uint64_t)c->line[j] << (56 - 8 * j);
    }
    w = take ? w & (~(uint64_t)0 << (64 - 8 * take)) : 0;
    c->key = w | (uint64_t)(c->len < 8 ? c->len : 8);
    return 1;
}

static void sift_down(cursor_t **heap, size_t n, size_t i)
{
    cursor_t *x = heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && cursor_less(heap[c + 1], heap[c]))
            c++;
        if (!cursor_less(heap[c], x))
            break;
        heap[i] = heap[c];
        i = c;
    }
    heap[i] = x;
}

static PyObject *merge_runs(PyObject *self, PyObject *args)
{
    PyObject *runs_obj, *dst;
    if (!PyArg_ParseTuple(args, "OO", &runs_obj, &dst))
        return NULL;
    PyObject *runs = PySequence_Fast(runs_obj, "_lines.merge_runs: runs must be a sequence");
    if (!runs)
        return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(runs);
    Py_buffer *v = calloc((size_t)(k ? k : 1), sizeof *v), out = {0};
    cursor_t *cur = calloc((size_t)(k ? k : 1), sizeof *cur);
    cursor_t **heap = calloc((size_t)(k ? k : 1), sizeof *heap);
    PyObject *result = NULL;
    Py_ssize_t got = 0, total = 0;
    if (!v || !cur || !heap) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < k; i++, got++) {
        if (get_buf(PySequence_Fast_GET_ITEM(runs, i), &v[i], 0, "each run") < 0)
            goto done;
        const uint8_t *b = v[i].buf;
        if (v[i].len && b[v[i].len - 1] != '\n') {
            PyErr_Format(PyExc_ValueError, "_lines.merge_runs: run %zd does not end with a "
                         "newline", i);
            goto done;
        }
        total += v[i].len;
    }
    if (get_buf(dst, &out, 1, "out") < 0)
        goto done;
    if (out.len < total) {
        PyErr_Format(PyExc_ValueError, "_lines.merge_runs: out has %zd bytes, %zd needed",
                     out.len, total);
        goto done;
    }
    long long lines = 0;
    Py_BEGIN_ALLOW_THREADS
    size_t h = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        cur[i].next = v[i].buf;
        cur[i].end = (const uint8_t *)v[i].buf + v[i].len;
        if (cursor_step(&cur[i]))
            heap[h++] = &cur[i];
    }
    for (size_t i = h / 2; i-- > 0;)
        sift_down(heap, h, i);
    uint8_t *o = out.buf, *o_end = o + out.len;
    while (h) {
        cursor_t *c = heap[0];
        copy_line(o, c->line, c->len + 1, (size_t)(o_end - o), (size_t)(c->end - c->line));
        o += c->len + 1;
        lines++;
        if (!cursor_step(c))
            heap[0] = heap[--h];
        if (h)
            sift_down(heap, h, 0);
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromLongLong(lines);
done:
    if (out.obj)
        PyBuffer_Release(&out);
    if (v)
        release(v, (int)got);
    free(v);
    free(cur);
    free(heap);
    Py_DECREF(runs);
    return result;
}

/* ------------------------------------------------------------------ grep's candidate lines */
#define MAX_LITERALS 64

typedef struct { const uint8_t *bytes; Py_ssize_t len; } literal_t;

static inline int literal_at(const uint8_t *d, Py_ssize_t n, Py_ssize_t at, const literal_t *lit,
                             Py_ssize_t nl)
{
    for (Py_ssize_t j = 0; j < nl; j++)
        if (at + lit[j].len <= n && d[at] == lit[j].bytes[0]
            && memcmp(d + at, lit[j].bytes, (size_t)lit[j].len) == 0)
            return 1;
    return 0;
}

/* The first position from pos on where a literal begins, or n. With SSE2, 16 positions at a
   time: a literal can begin at i only if d[i] is its first byte and d[i + len - 1] its last
   (two compares per literal and block), then memcmp. */
static Py_ssize_t next_literal(const uint8_t *d, Py_ssize_t n, Py_ssize_t pos,
                               const literal_t *lit, Py_ssize_t nl, Py_ssize_t longest)
{
#ifdef __SSE2__
    __m128i first[MAX_LITERALS], last[MAX_LITERALS];
    for (Py_ssize_t j = 0; j < nl; j++) {
        first[j] = _mm_set1_epi8((char)lit[j].bytes[0]);
        last[j] = _mm_set1_epi8((char)lit[j].bytes[lit[j].len - 1]);
    }
    for (; pos + longest + 16 <= n; pos += 16) {
        unsigned mask = 0;
        __m128i here = _mm_loadu_si128((const __m128i *)(d + pos));
        for (Py_ssize_t j = 0; j < nl; j++) {
            __m128i end = _mm_loadu_si128((const __m128i *)(d + pos + lit[j].len - 1));
            mask |= (unsigned)_mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(here, first[j]),
                                                              _mm_cmpeq_epi8(end, last[j])));
        }
        while (mask) {
            Py_ssize_t at = pos + __builtin_ctz(mask);
            if (literal_at(d, n, at, lit, nl))
                return at;
            mask &= mask - 1;
        }
    }
#else
    (void)longest;
#endif
    for (; pos < n; pos++)
        if (literal_at(d, n, pos, lit, nl))
            return pos;
    return n;
}

static PyObject *find_line_spans(PyObject *self, PyObject *args)
{
    PyObject *data_obj, *lits_obj, *dst;
    if (!PyArg_ParseTuple(args, "OOO", &data_obj, &lits_obj, &dst))
        return NULL;
    PyObject *lits = PySequence_Fast(lits_obj, "_lines.find_line_spans: literals must be a sequence");
    if (!lits)
        return NULL;
    Py_ssize_t nl = PySequence_Fast_GET_SIZE(lits), longest = 0;
    Py_buffer data = {0}, out = {0}, lv[MAX_LITERALS];
    literal_t lit[MAX_LITERALS];
    int got = 0;
    PyObject *result = NULL;
    memset(lv, 0, sizeof lv);
    if (nl < 1 || nl > MAX_LITERALS) {
        PyErr_Format(PyExc_ValueError, "_lines.find_line_spans: 1 to %d literals, not %zd",
                     MAX_LITERALS, nl);
        goto done;
    }
    for (; got < nl; got++) {
        if (get_buf(PySequence_Fast_GET_ITEM(lits, got), &lv[got], 0, "each literal") < 0)
            goto done;
        lit[got].bytes = lv[got].buf;
        lit[got].len = lv[got].len;
        if (lv[got].len < 1 || memchr(lv[got].buf, '\n', (size_t)lv[got].len)) {
            got++;
            PyErr_SetString(PyExc_ValueError, "_lines.find_line_spans: a literal is empty or "
                                              "holds a newline");
            goto done;
        }
        if (lv[got].len > longest)
            longest = lv[got].len;
    }
    if (get_buf(data_obj, &data, 0, "data") < 0 || get_buf(dst, &out, 1, "out") < 0)
        goto done;
    Py_ssize_t room = out.len / 16, found = 0;
    int full = 0;
    Py_BEGIN_ALLOW_THREADS
    const uint8_t *d = data.buf;
    Py_ssize_t n = data.len, pos = 0;
    int64_t *o = out.buf;
    while ((pos = next_literal(d, n, pos, lit, nl, longest)) < n) {
        const uint8_t *e = memchr(d + pos, '\n', (size_t)(n - pos));
        Py_ssize_t end = e ? e - d : n, start = pos;
        while (start > 0 && d[start - 1] != '\n')
            start--;
        if (found == room) {
            full = 1;
            break;
        }
        o[2 * found] = start;
        o[2 * found + 1] = end;
        found++;
        pos = end + 1;
    }
    Py_END_ALLOW_THREADS
    if (full)
        PyErr_SetString(PyExc_ValueError, "_lines.find_line_spans: out is too small");
    else
        result = PyLong_FromSsize_t(found);
done:
    if (data.obj)
        PyBuffer_Release(&data);
    if (out.obj)
        PyBuffer_Release(&out);
    release(lv, got);
    Py_DECREF(lits);
    return result;
}

static PyObject *span_lines(PyObject *self, PyObject *args)
{
    PyObject *data_obj, *spans_obj;
    if (!PyArg_ParseTuple(args, "OO", &data_obj, &spans_obj))
        return NULL;
    Py_buffer data = {0}, spans = {0};
    PyObject *list = NULL;
    if (get_buf(data_obj, &data, 0, "data") < 0 || get_buf(spans_obj, &spans, 0, "spans") < 0)
        goto done;
    if (spans.len % 16) {
        PyErr_SetString(PyExc_ValueError, "_lines.span_lines: spans must be int64 pairs");
        goto done;
    }
    const int64_t *sp = spans.buf;
    Py_ssize_t n = spans.len / 16;
    for (Py_ssize_t i = 0; i < n; i++)
        if (sp[2 * i] < 0 || sp[2 * i] > sp[2 * i + 1] || sp[2 * i + 1] > data.len) {
            PyErr_Format(PyExc_ValueError, "_lines.span_lines: span %zd (%lld, %lld) is not "
                         "within the data (%zd bytes)", i, (long long)sp[2 * i],
                         (long long)sp[2 * i + 1], data.len);
            goto done;
        }
    list = PyList_New(n);
    for (Py_ssize_t i = 0; list && i < n; i++) {
        PyObject *line = PyBytes_FromStringAndSize((const char *)data.buf + sp[2 * i],
                                                   (Py_ssize_t)(sp[2 * i + 1] - sp[2 * i]));
        if (!line)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, line);
    }
done:
    if (data.obj)
        PyBuffer_Release(&data);
    if (spans.obj)
        PyBuffer_Release(&spans);
    return list;
}

static PyMethodDef methods[] = {
    {"sort_lines", sort_lines, METH_VARARGS,
     "sort_lines(data, starts, lens, order[, scratch]): order <- line numbers in bytes order (ties "
     "by number)"},
    {"count_lines", count_lines, METH_O, "count_lines(data): the number of newlines in data"},
    {"line_spans", line_spans, METH_VARARGS,
     "line_spans(data, starts, lens): the newline-ended lines' starts and lengths; count"},
    {"gather_lines", gather_lines, METH_VARARGS,
     "gather_lines(data, starts, lens, order, out): the lines in order, each + newline; bytes"},
    {"run_points", run_points, METH_VARARGS,
     "run_points(run, lines, points, line_bytes, out): (start, end, line) of the run's lines "
     "ending each of points stretches of even cost; count"},
    {"merge_runs", merge_runs, METH_VARARGS,
     "merge_runs(runs, out): sorted runs of newline-ended lines merged into out; lines"},
    {"find_line_spans", find_line_spans, METH_VARARGS,
     "find_line_spans(data, literals, out): (start, end) of lines holding a literal; count"},
    {"span_lines", span_lines, METH_VARARGS,
     "span_lines(data, spans): data[start:end] as bytes for each int64 (start, end) pair; a list"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lines",
                                    "Line kernels of jobs/linesort.py and jobs/grep.py.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__lines(void) { return PyModule_Create(&module); }
