/* Line kernels of jobs/linesort.py and jobs/grep.py (mpitiny.kernels._lines).

   sort_lines(data, starts, lens, order): order <- the line numbers 0..n-1 ordered by the
       lines' bytes (memcmp, then length: Python's bytes order), equal lines by line number.
       A most-significant-first radix sort: at depth d every line's key is its bytes d..d+6
       (big-endian, zero past its end) and, in the low byte, how many bytes it has from d on
       (0-7, or 8 for "more than 7"); the keys are sorted stably (key_sort: by bytes, most
       significant first, small buckets by insertion), then each run of equal keys with low byte 8 again at depth d + 7 (the largest
       run in a loop, the others recursively: the stack stays O(log n)). Groups of under
       SMALL lines by insertion sort (memcmp). Equal keys with a low byte under 8 are equal
       lines, already in line-number order (the sort is stable).
   count_lines(data): the number of newlines.
   line_spans(data, starts, lens): the start and length (without its newline) of each
       newline-ended line of data, up to the arrays' length; returns how many.
   gather_lines(data, starts, lens, order, out): out <- the lines in that order, each followed
       by a newline.
   merge_runs(runs, out): out <- the lines of the runs (each a buffer of lines sorted by bytes,
       every line ending with a newline) merged in bytes order (a binary heap of the runs);
       returns the number of lines.
   find_line_spans(data, literals, out): the lines (split at newlines) holding at least one of
       the literals (non-empty, no newline), in order, as (start, end) pairs in out (int64, 2
       per line, at most one per line); returns their number. With SSE2, 16 positions at a
       time are tested for each literal's first and last byte, the few that pass by memcmp;
       after a hit the scan goes on from the next line.

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
        for (size_t i = 0; i < n; i++)
            a[i].key = key_at(L, a[i].idx, depth);
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
    Py_buffer v[4];
    lines_t L;
    Py_ssize_t n;
    if (line_args(args, v, &L, &n, 1) < 0)
        return NULL;
    rec_t *a = malloc((size_t)(n ? n : 1) * sizeof *a), *tmp = malloc((size_t)(n ? n : 1) * sizeof *a);
    if (!a || !tmp) {
        free(a);
        free(tmp);
        release(v, 4);
        return PyErr_NoMemory();
    }
    int64_t *order = v[3].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        a[i].idx = (uint64_t)i;
    sort_group(&L, a, tmp, (size_t)n, 0);
    for (Py_ssize_t i = 0; i < n; i++)
        order[i] = (int64_t)a[i].idx;
    Py_END_ALLOW_THREADS
    free(a);
    free(tmp);
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
    int64_t need = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (order[i] < 0 || order[i] >= n) {
            PyErr_Format(PyExc_ValueError, "_lines.gather_lines: order[%zd] = %lld is no line",
                         i, (long long)order[i]);
            return release(v, 4), PyBuffer_Release(&out), NULL;
        }
        need += L.lens[order[i]] + 1;
    }
    if (need > out.len) {
        PyErr_Format(PyExc_ValueError, "_lines.gather_lines: out has %zd bytes, %lld needed",
                     out.len, (long long)need);
        return release(v, 4), PyBuffer_Release(&out), NULL;
    }
    uint8_t *o = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t k = order[i], len = L.lens[k];
        memcpy(o, L.buf + L.starts[k], (size_t)len);
        o[len] = '\n';
        o += len + 1;
    }
    Py_END_ALLOW_THREADS
    release(v, 4);
    PyBuffer_Release(&out);
    return PyLong_FromLongLong(need);
}

static PyObject *count_lines(PyObject *self, PyObject *arg)
{
    Py_buffer v = {0};
    if (get_buf(arg, &v, 0, "data") < 0)
        return NULL;
    const uint8_t *p = v.buf, *end = p + v.len;
    Py_ssize_t n = 0;
    Py_BEGIN_ALLOW_THREADS
    for (; p < end && (p = memchr(p, '\n', (size_t)(end - p))); p++)
        n++;
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
    const uint8_t *d = v[0].buf, *end = d + v[0].len, *p = d;
    int64_t *starts = v[1].buf, *lens = v[2].buf;
    Py_ssize_t room = v[1].len / 8, n = 0;
    Py_BEGIN_ALLOW_THREADS
    while (p < end && n < room) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break;
        starts[n] = p - d;
        lens[n] = nl - p;
        n++;
        p = nl + 1;
    }
    Py_END_ALLOW_THREADS
    release(v, 3);
    return PyLong_FromSsize_t(n);
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
    uint8_t *o = out.buf;
    while (h) {
        cursor_t *c = heap[0];
        memcpy(o, c->line, c->len + 1);
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

static PyMethodDef methods[] = {
    {"sort_lines", sort_lines, METH_VARARGS,
     "sort_lines(data, starts, lens, order): order <- line numbers in bytes order (ties by number)"},
    {"count_lines", count_lines, METH_O, "count_lines(data): the number of newlines in data"},
    {"line_spans", line_spans, METH_VARARGS,
     "line_spans(data, starts, lens): the newline-ended lines' starts and lengths; count"},
    {"gather_lines", gather_lines, METH_VARARGS,
     "gather_lines(data, starts, lens, order, out): the lines in order, each + newline; bytes"},
    {"merge_runs", merge_runs, METH_VARARGS,
     "merge_runs(runs, out): sorted runs of newline-ended lines merged into out; lines"},
    {"find_line_spans", find_line_spans, METH_VARARGS,
     "find_line_spans(data, literals, out): (start, end) of lines holding a literal; count"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lines",
                                    "Line kernels of jobs/linesort.py and jobs/grep.py.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__lines(void) { return PyModule_Create(&module); }
