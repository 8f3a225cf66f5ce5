/* veil.redact._cplan: the filtered-object loop of a field plan, compiled.
 *
 * A `Filter` is built once per filtered-object template by veil.redact._compile from the same steps
 * the Python code generator writes out (`ObjSteps`): the generated Python function and this loop are
 * two renderings of one decision, and tests/redact/test_native.py compares them on random plans and
 * documents. This module decides nothing: every key, kind, transform, event and fallback closure is
 * handed to it by the compiler.
 *
 * Semantics, per named key of a filtered object `src` that holds it (keys in the plan's order):
 *   KEEP       out[k] = src[k]
 *   FIXED      out[k] = the transform's fixed result; count c1
 *   TRANSFORM  out[k] = transform(src[k]) and count c1; on TransformTypeError out[k] = None, count c2
 *   OBJECT     a dict: out[k] = child filter applied to it; else r = nd(v, ev), kept unless GONE
 *   ARRAY      a list: out[k] = [child filter (dicts) or nde(x, ev) (others, dropped when GONE)];
 *              else r = nd(v, ev), kept unless GONE
 *   SCRUB      a scalar (exact str, int, float, bool, None) is kept; else out[k] = fn(v, ev)
 *   CALL       r = fn(v, ev), kept unless GONE
 * Then, when `out` has fewer keys than `src`, the key tuple of `src` is counted in ev[shape][keys]. A key
 * set equal to the one this template counted last is not built again: its count waits in the call's
 * pending slot for the template and is added when the key set changes or the top call returns (a key set
 * is always inserted when first met, so ev's order is the generated Python's).
 * Counters (transforms) are kept in a C array per call of the top filter and added to `ev` when it
 * returns, in counter order; on an exception nothing is added (as in the generated Python).
 *
 * The top filter also sets ev[DEPTH] to how deep its output is nested when that output holds nothing
 * but the filters' own objects and arrays and scalars (nothing a key kept whole, a transform or a
 * callback made a container), else to None: veil.redact.engine reports it (Report.depth), and the
 * depth check then need not walk what the loop has just built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <string.h>

#include "_cxform.h"

enum { K_KEEP = 0, K_FIXED = 1, K_TRANSFORM = 2, K_OBJECT = 3, K_ARRAY = 4, K_SCRUB = 5, K_CALL = 6 };

typedef struct {
    PyObject *key; /* exact str, interned */
    int kind;
    PyObject *a;   /* FIXED: result; TRANSFORM: transform; OBJECT/ARRAY: child Filter; SCRUB/CALL: fn */
    PyObject *nd;  /* OBJECT: not-an-object fn; ARRAY: not-an-array fn */
    PyObject *nde; /* ARRAY: element-not-an-object fn */
    Py_ssize_t c1, c2;
} Entry;

/* What Filter and InPlace share: called as fn(value, ev), through vectorcall once initialized. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
} HandlerObject;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t n;
    Entry *entries;
    PyObject *shape;    /* the ev key the key sets of this template are counted under */
    PyObject *nondict;  /* the top call's fallback for a value that is not a dict */
    PyObject *counters; /* tuple of the events counted per slot (the top filter's), or None */
    Py_ssize_t ncounters;
    Py_ssize_t idx;     /* this template's pending slot in a call of its top filter */
    Py_ssize_t nfilters; /* top: how many templates its tree holds (pending slots per call) */
} FilterObject;

/* A key set counted more than once in a row: added to ev[shape] (sg) when it changes or at the end. */
typedef struct {
    const FilterObject *owner; /* the template whose key set this is (compared, never dereferenced) */
    PyObject *sg;  /* ev[shape], strong */
    PyObject *sig; /* the key tuple, strong */
    Py_ssize_t n;  /* counted since it was last added */
} Pending;

/* What one call of a top filter carries down its tree. */
typedef struct {
    Py_ssize_t *cnt;
    Pending *pend;
    Py_ssize_t npend;
    int opaque; /* the output holds a container the loop did not build: its depth is not known here */
} Run;

static PyObject *GONE = NULL;       /* veil.redact._compile.GONE */
static PyObject *DEPTH = NULL;      /* veil.redact.native.DEPTH: the ev key of the output depth */
static PyObject *TYPE_ERROR = NULL; /* veil.redact.transforms.TransformTypeError */
static PyTypeObject FilterType;

static inline int is_scalar(PyObject *v) {
    return PyUnicode_CheckExact(v) || PyLong_CheckExact(v) || PyFloat_CheckExact(v) || PyBool_Check(v) ||
           v == Py_None;
}

static inline PyObject *call2(PyObject *fn, PyObject *v, PyObject *ev) {
    PyObject *args[2] = {v, ev};
    return PyObject_Vectorcall(fn, args, 2, NULL);
}

/* ev[key] = ev.get(key, 0) + n */
static int count_add(PyObject *ev, PyObject *key, Py_ssize_t n) {
    PyObject *old = PyDict_GetItemWithError(ev, key);
    if (old == NULL && PyErr_Occurred()) return -1;
    PyObject *by = PyLong_FromSsize_t(n);
    if (by == NULL) return -1;
    PyObject *now = old == NULL ? Py_NewRef(by) : PyNumber_Add(old, by);
    Py_DECREF(by);
    int rc = now ? PyDict_SetItem(ev, key, now) : -1;
    Py_XDECREF(now);
    return rc;
}

/* Whether dict `src` has the keys of tuple `sig`, in that order. */
static int same_keys(PyObject *src, PyObject *sig) {
    Py_ssize_t n = PyTuple_GET_SIZE(sig), pos = 0, i = 0;
    PyObject *k, *v;
    if (PyDict_GET_SIZE(src) != n) return 0;
    while (PyDict_Next(src, &pos, &k, &v)) {
        PyObject *s = PyTuple_GET_ITEM(sig, i++);
        if (k != s) {
            int eq = PyObject_RichCompareBool(k, s, Py_EQ);
            if (eq <= 0) return eq;
        }
    }
    return 1;
}

static int flush_pending(Pending *p) {
    int rc = p->n ? count_add(p->sg, p->sig, p->n) : 0;
    p->n = 0;
    return rc;
}

static void drop_pending(Run *run) {
    for (Py_ssize_t i = 0; i < run->npend; i++) {
        Py_CLEAR(run->pend[i].sg);
        Py_CLEAR(run->pend[i].sig);
        run->pend[i].n = 0;
        run->pend[i].owner = NULL;
    }
}

static int count_shape(FilterObject *f, PyObject *src, PyObject *ev, Run *run) {
    PyObject *shape = f->shape;
    Pending *p = f->idx < run->npend ? &run->pend[f->idx] : NULL;
    /* p->sg is ev[shape] of this call's ev: the same ev all the way down. A slot is this template's own
     * unless one child Filter was made part of two top filters (the last top to check it numbered it):
     * then a key set pending for another template is added first, never counted under this shape. */
    if (p != NULL && p->sig != NULL && p->owner == f) {
        int same = same_keys(src, p->sig);
        if (same < 0) return -1;
        if (same) {
            p->n++;
            return 0;
        }
    }
    if (p != NULL && flush_pending(p) < 0) return -1;
    PyObject *sg = PyDict_GetItemWithError(ev, shape);
    if (sg == NULL) {
        if (PyErr_Occurred()) return -1;
        sg = PyDict_New();
        if (sg == NULL) return -1;
        int rc = PyDict_SetItem(ev, shape, sg);
        Py_DECREF(sg); /* ev holds it */
        if (rc < 0) return -1;
    }
    Py_ssize_t n = PyDict_GET_SIZE(src), pos = 0, i = 0;
    PyObject *sk = PyTuple_New(n), *k, *v;
    if (sk == NULL) return -1;
    while (i < n && PyDict_Next(src, &pos, &k, &v)) {
        PyTuple_SET_ITEM(sk, i, Py_NewRef(k));
        i++;
    }
    int rc = count_add(sg, sk, 1); /* inserted when first met, as the generated Python does */
    if (rc == 0 && p != NULL) {
        Py_XSETREF(p->sg, Py_NewRef(sg));
        Py_XSETREF(p->sig, Py_NewRef(sk));
        p->owner = f;
    }
    Py_DECREF(sk);
    return rc;
}

static PyObject *apply_obj(FilterObject *f, PyObject *src, PyObject *ev, Run *run, Py_ssize_t *depth);

/* A result the loop did not build itself: a scalar is depth 0, anything else makes the output opaque. */
static inline void foreign(PyObject *r, Run *run) {
    if (r != GONE && !is_scalar(r)) run->opaque = 1;
}

static PyObject *apply_arr(Entry *e, PyObject *w, PyObject *ev, Run *run, Py_ssize_t *depth) {
    PyObject *a = PyList_New(0);
    if (a == NULL) return NULL;
    FilterObject *child = (FilterObject *)e->a;
    Py_ssize_t deepest = 0;
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(w); j++) {
        PyObject *x = Py_NewRef(PyList_GET_ITEM(w, j)), *r;
        if (PyDict_Check(x)) {
            Py_ssize_t d = 0;
            r = apply_obj(child, x, ev, run, &d);
            if (d > deepest) deepest = d;
        } else {
            r = call2(e->nde, x, ev);
            if (r != NULL) foreign(r, run);
        }
        Py_DECREF(x);
        if (r == NULL) {
            Py_DECREF(a);
            return NULL;
        }
        if (r != GONE && PyList_Append(a, r) < 0) {
            Py_DECREF(r);
            Py_DECREF(a);
            return NULL;
        }
        Py_DECREF(r);
    }
    *depth = 1 + deepest;
    return a;
}

static PyObject *apply_obj(FilterObject *f, PyObject *src, PyObject *ev, Run *run, Py_ssize_t *depth) {
    Py_ssize_t *cnt = run->cnt, deepest = 0, d;
    if (Py_EnterRecursiveCall(" in a field plan")) return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL) goto fail;
    for (Py_ssize_t i = 0; i < f->n; i++) {
        Entry *e = &f->entries[i];
        PyObject *v = PyDict_GetItemWithError(src, e->key), *r;
        if (v == NULL) {
            if (PyErr_Occurred()) goto fail;
            continue;
        }
        Py_INCREF(v); /* a callback may change src */
        switch (e->kind) {
        case K_KEEP:
            r = Py_NewRef(v);
            foreign(r, run);
            break;
        case K_FIXED:
            r = Py_NewRef(e->a);
            cnt[e->c1]++;
            break;
        case K_TRANSFORM:
            r = Py_IS_TYPE(e->a, &XformType) ? xform_apply(e->a, v) : PyObject_CallOneArg(e->a, v);
            if (r != NULL) {
                cnt[e->c1]++;
            } else if (PyErr_ExceptionMatches(TYPE_ERROR)) {
                PyErr_Clear();
                r = Py_NewRef(Py_None);
                cnt[e->c2]++;
            }
            if (r != NULL) foreign(r, run);
            break;
        case K_OBJECT:
        case K_ARRAY:
            d = 0;
            if (e->kind == K_OBJECT ? PyDict_Check(v) : PyList_Check(v)) {
                r = e->kind == K_OBJECT ? apply_obj((FilterObject *)e->a, v, ev, run, &d) : apply_arr(e, v, ev, run, &d);
                if (d > deepest) deepest = d;
            } else {
                r = call2(e->nd, v, ev);
                if (r != NULL) foreign(r, run);
            }
            break;
        case K_SCRUB:
            r = is_scalar(v) ? Py_NewRef(v) : call2(e->a, v, ev);
            if (r != NULL) foreign(r, run);
            break;
        default: /* K_CALL */
            r = call2(e->a, v, ev);
            if (r != NULL) foreign(r, run);
        }
        Py_DECREF(v);
        if (r == NULL) goto fail;
        if (r != GONE && PyDict_SetItem(out, e->key, r) < 0) {
            Py_DECREF(r);
            goto fail;
        }
        Py_DECREF(r);
    }
    if (PyDict_GET_SIZE(out) != PyDict_GET_SIZE(src) && count_shape(f, src, ev, run) < 0) goto fail;
    Py_LeaveRecursiveCall();
    *depth = 1 + deepest;
    return out;
fail:
    Py_XDECREF(out);
    Py_LeaveRecursiveCall();
    return NULL;
}

/* A handler is called as fn(value, ev) with ev a dict. */
static int handler_args(size_t nargsf, PyObject *kwnames, PyObject *const *args) {
    if (PyVectorcall_NARGS(nargsf) != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a field-plan handler takes (value, ev)");
        return -1;
    }
    if (!PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "ev must be a dict");
        return -1;
    }
    return 0;
}

/* tp_call of both types: a handler whose __init__ failed or never ran refuses to be called. */
static PyObject *handler_call(PyObject *self, PyObject *args, PyObject *kwds) {
    if (((HandlerObject *)self)->vectorcall == NULL) {
        PyErr_SetString(PyExc_TypeError, "the handler is not initialized");
        return NULL;
    }
    return PyVectorcall_Call(self, args, kwds);
}

#define SMALL 32

static PyObject *filter_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    FilterObject *f = (FilterObject *)self;
    if (handler_args(nargsf, kwnames, args) < 0) return NULL;
    PyObject *v = args[0], *ev = args[1];
    if (!PyDict_Check(v)) { /* the fallback built it (maybe through other filters, which left their depth) */
        PyObject *r = call2(f->nondict, v, ev);
        if (r != NULL && f->counters != Py_None && PyDict_SetItem(ev, DEPTH, Py_None) < 0) Py_CLEAR(r);
        return r;
    }
    if (f->counters == Py_None) {
        PyErr_SetString(PyExc_TypeError, "an inner filter is not called on its own");
        return NULL;
    }
    Py_ssize_t small[SMALL] = {0}, *cnt = small;
    Pending spend[SMALL], *pend = spend; /* the first nfilters are zeroed below: a 1 KB memset per call otherwise */
    if (f->ncounters > SMALL) {
        cnt = PyMem_Calloc((size_t)f->ncounters, sizeof(Py_ssize_t));
        if (cnt == NULL) return PyErr_NoMemory();
    }
    if (f->nfilters > SMALL) {
        pend = PyMem_Calloc((size_t)f->nfilters, sizeof(Pending));
        if (pend == NULL) {
            if (cnt != small) PyMem_Free(cnt);
            return PyErr_NoMemory();
        }
    } else {
        memset(spend, 0, (size_t)f->nfilters * sizeof(Pending));
    }
    Run run = {cnt, pend, f->nfilters, 0};
    Py_ssize_t depth = 0;
    PyObject *out = apply_obj(f, v, ev, &run, &depth);
    /* pending key sets first (their keys are in ev[shape] already), then the counters, in order */
    for (Py_ssize_t i = 0; out != NULL && i < run.npend; i++) {
        if (pend[i].sig != NULL && flush_pending(&pend[i]) < 0) Py_CLEAR(out);
    }
    for (Py_ssize_t i = 0; out != NULL && i < f->ncounters; i++) {
        if (cnt[i] && count_add(ev, PyTuple_GET_ITEM(f->counters, i), cnt[i]) < 0) Py_CLEAR(out);
    }
    if (out != NULL) {
        PyObject *known = run.opaque ? Py_NewRef(Py_None) : PyLong_FromSsize_t(depth);
        if (known == NULL || PyDict_SetItem(ev, DEPTH, known) < 0) Py_CLEAR(out);
        Py_XDECREF(known);
    }
    drop_pending(&run);
    if (cnt != small) PyMem_Free(cnt);
    if (pend != spend) PyMem_Free(pend);
    return out;
}

static void clear_entries(FilterObject *f) {
    Entry *es = f->entries;
    Py_ssize_t n = f->n;
    f->entries = NULL;
    f->n = 0;
    for (Py_ssize_t i = 0; es != NULL && i < n; i++) {
        Py_XDECREF(es[i].key);
        Py_XDECREF(es[i].a);
        Py_XDECREF(es[i].nd);
        Py_XDECREF(es[i].nde);
    }
    PyMem_Free(es);
}

static int filter_clear(PyObject *self) {
    FilterObject *f = (FilterObject *)self;
    f->vectorcall = NULL; /* cleared (a cycle being collected): called again, it refuses (handler_call) */
    clear_entries(f);
    Py_CLEAR(f->shape);
    Py_CLEAR(f->nondict);
    Py_CLEAR(f->counters);
    return 0;
}

static int filter_traverse(PyObject *self, visitproc visit, void *arg) {
    FilterObject *f = (FilterObject *)self;
    for (Py_ssize_t i = 0; i < f->n; i++) {
        Py_VISIT(f->entries[i].a);
        Py_VISIT(f->entries[i].nd);
        Py_VISIT(f->entries[i].nde);
    }
    Py_VISIT(f->shape);
    Py_VISIT(f->nondict);
    Py_VISIT(f->counters);
    return 0;
}

static void filter_dealloc(PyObject *self) {
    PyObject_GC_UnTrack(self);
    filter_clear(self);
    Py_TYPE(self)->tp_free(self);
}

static int bad(const char *what) {
    PyErr_SetString(PyExc_TypeError, what);
    return -1;
}

/* Slots an entry counts into must exist in its top filter: checked when the top is made (its children are made first). */
static int check_slots(FilterObject *f, Py_ssize_t ncounters, int depth, Py_ssize_t *nfilters) {
    if (depth > 64) return bad("filters nested too deep");
    f->idx = (*nfilters)++;
    for (Py_ssize_t i = 0; i < f->n; i++) {
        Entry *e = &f->entries[i];
        if (e->kind == K_FIXED && e->c1 >= ncounters) return bad("a counter slot is out of range");
        if (e->kind == K_TRANSFORM && (e->c1 >= ncounters || e->c2 >= ncounters))
            return bad("a counter slot is out of range");
        if ((e->kind == K_OBJECT || e->kind == K_ARRAY) && check_slots((FilterObject *)e->a, ncounters, depth + 1, nfilters) < 0)
            return -1;
    }
    return 0;
}

/* Filter(entries, shape, nondict, counters): entries a sequence of (key, kind, a, nd, nde, c1, c2);
 * counters the tuple of events of the top filter (None for an inner one, whose slots index the top's). */
static int filter_init(PyObject *self, PyObject *args, PyObject *kwds) {
    FilterObject *f = (FilterObject *)self;
    PyObject *entries, *shape, *nondict, *counters;
    static char *names[] = {"entries", "shape", "nondict", "counters", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO:Filter", names, &entries, &shape, &nondict, &counters))
        return -1;
    if (GONE == NULL) return bad("configure() first (veil.redact.native does)");
    if (f->entries != NULL || f->shape != NULL) return bad("a Filter is initialized once");
    if (!PyCallable_Check(nondict)) return bad("nondict must be callable");
    if (counters != Py_None && !PyTuple_Check(counters)) return bad("counters must be a tuple or None");
    PyObject *seq = PySequence_Fast(entries, "entries must be a sequence");
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    f->entries = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Entry));
    if (f->entries == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Entry *e = &f->entries[i];
        PyObject *key, *a, *nd, *nde;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "UiOOOnn:entry", &key, &e->kind, &a, &nd, &nde,
                              &e->c1, &e->c2))
            goto fail;
        f->n = i + 1;
        e->key = Py_NewRef(key);
        e->a = Py_NewRef(a);
        e->nd = Py_NewRef(nd);
        e->nde = Py_NewRef(nde);
        if (!PyUnicode_CheckExact(key)) {
            bad("a key must be a str");
            goto fail;
        }
        PyUnicode_InternInPlace(&e->key);
        int counts = e->kind == K_FIXED || e->kind == K_TRANSFORM;
        if (e->kind < K_KEEP || e->kind > K_CALL) {
            bad("unknown entry kind");
            goto fail;
        }
        if ((e->kind == K_OBJECT || e->kind == K_ARRAY) && !PyObject_TypeCheck(a, &FilterType)) {
            bad("an object or array entry needs a child Filter");
            goto fail;
        }
        /* a child made later would count into slots its top never checked (check_slots) */
        if ((e->kind == K_OBJECT || e->kind == K_ARRAY) && ((FilterObject *)a)->vectorcall == NULL) {
            bad("a child Filter must be initialized before its parent");
            goto fail;
        }
        if ((e->kind == K_OBJECT || e->kind == K_ARRAY) && !PyCallable_Check(nd)) {
            bad("an object or array entry needs a fallback");
            goto fail;
        }
        if (e->kind == K_ARRAY && !PyCallable_Check(nde)) {
            bad("an array entry needs an element fallback");
            goto fail;
        }
        if ((e->kind == K_TRANSFORM || e->kind == K_SCRUB || e->kind == K_CALL) && !PyCallable_Check(a)) {
            bad("a transform, scrub or call entry needs a callable");
            goto fail;
        }
        if (counts && (e->c1 < 0 || (e->kind == K_TRANSFORM && e->c2 < 0))) {
            bad("a counting entry needs counter slots");
            goto fail;
        }
    }
    Py_DECREF(seq);
    f->ncounters = counters == Py_None ? 0 : PyTuple_GET_SIZE(counters);
    f->idx = PY_SSIZE_T_MAX; /* an inner filter gets its slot from its top (check_slots) */
    f->nfilters = 0;
    if (counters != Py_None && check_slots(f, f->ncounters, 0, &f->nfilters) < 0) {
        clear_entries(f);
        return -1;
    }
    f->shape = Py_NewRef(shape);
    f->nondict = Py_NewRef(nondict);
    f->counters = Py_NewRef(counters);
    f->vectorcall = filter_vectorcall;
    return 0;
fail:
    Py_DECREF(seq);
    clear_entries(f);
    return -1;
}

static PyTypeObject FilterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "veil.redact._cplan.Filter",
    .tp_basicsize = sizeof(FilterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The filtered-object loop of one field-plan template (see veil.redact._compile).",
    .tp_new = PyType_GenericNew,
    .tp_init = filter_init,
    .tp_dealloc = filter_dealloc,
    .tp_traverse = filter_traverse,
    .tp_clear = filter_clear,
    .tp_call = handler_call,
    .tp_vectorcall_offset = offsetof(FilterObject, vectorcall),
};

static PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *gone, *type_error, *depth;
    if (!PyArg_ParseTuple(args, "OOO:configure", &gone, &type_error, &depth)) return NULL;
    if (!PyExceptionClass_Check(type_error)) return PyErr_Format(PyExc_TypeError, "type_error must be an exception");
    Py_XSETREF(GONE, Py_NewRef(gone));
    Py_XSETREF(TYPE_ERROR, Py_NewRef(type_error));
    Py_XSETREF(DEPTH, Py_NewRef(depth));
    Py_RETURN_NONE;
}

/* InPlace(gone, fns, nondict): an object whose unnamed keys are kept (veil.redact._compile's
 * _inplace_obj, the same steps): named keys the plan removes are deleted, each counted in ev at once;
 * then each named key a closure decides is replaced by its result (deleted when GONE). The object is
 * changed in place and returned. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *gone;    /* tuple of (key, event) */
    PyObject *fns;     /* tuple of (key, fn) */
    PyObject *nondict;
} InPlaceObject;

static PyTypeObject InPlaceType;

static PyObject *inplace_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    InPlaceObject *f = (InPlaceObject *)self;
    if (handler_args(nargsf, kwnames, args) < 0) return NULL;
    PyObject *d = args[0], *ev = args[1];
    if (!PyDict_Check(d)) return call2(f->nondict, d, ev);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(f->gone); i++) {
        PyObject *pair = PyTuple_GET_ITEM(f->gone, i), *k = PyTuple_GET_ITEM(pair, 0);
        int has = PyDict_Contains(d, k);
        if (has < 0) return NULL;
        if (has && (PyDict_DelItem(d, k) < 0 || count_add(ev, PyTuple_GET_ITEM(pair, 1), 1) < 0)) return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(f->fns); i++) {
        PyObject *pair = PyTuple_GET_ITEM(f->fns, i), *k = PyTuple_GET_ITEM(pair, 0);
        PyObject *v = PyDict_GetItemWithError(d, k);
        if (v == NULL) {
            if (PyErr_Occurred()) return NULL;
            continue;
        }
        Py_INCREF(v);
        PyObject *r = call2(PyTuple_GET_ITEM(pair, 1), v, ev);
        Py_DECREF(v);
        if (r == NULL) return NULL;
        int rc = r == GONE ? PyDict_DelItem(d, k) : PyDict_SetItem(d, k, r);
        Py_DECREF(r);
        if (rc < 0) return NULL;
    }
    return Py_NewRef(d);
}

static int pairs_ok(PyObject *t, int callable_second) {
    if (!PyTuple_Check(t)) return bad("gone and fns must be tuples");
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
        PyObject *p = PyTuple_GET_ITEM(t, i);
        if (!PyTuple_Check(p) || PyTuple_GET_SIZE(p) != 2 || !PyUnicode_CheckExact(PyTuple_GET_ITEM(p, 0)))
            return bad("each entry must be a (str, value) pair");
        if (callable_second && !PyCallable_Check(PyTuple_GET_ITEM(p, 1))) return bad("a fn must be callable");
    }
    return 0;
}

static int inplace_init(PyObject *self, PyObject *args, PyObject *kwds) {
    InPlaceObject *f = (InPlaceObject *)self;
    PyObject *gone, *fns, *nondict;
    static char *names[] = {"gone", "fns", "nondict", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO:InPlace", names, &gone, &fns, &nondict)) return -1;
    if (GONE == NULL) return bad("configure() first (veil.redact.native does)");
    if (f->gone != NULL) return bad("an InPlace is initialized once");
    if (pairs_ok(gone, 0) < 0 || pairs_ok(fns, 1) < 0) return -1;
    if (!PyCallable_Check(nondict)) return bad("nondict must be callable");
    f->gone = Py_NewRef(gone);
    f->fns = Py_NewRef(fns);
    f->nondict = Py_NewRef(nondict);
    f->vectorcall = inplace_vectorcall;
    return 0;
}

static int inplace_clear(PyObject *self) {
    InPlaceObject *f = (InPlaceObject *)self;
    f->vectorcall = NULL;
    Py_CLEAR(f->gone);
    Py_CLEAR(f->fns);
    Py_CLEAR(f->nondict);
    return 0;
}

static int inplace_traverse(PyObject *self, visitproc visit, void *arg) {
    InPlaceObject *f = (InPlaceObject *)self;
    Py_VISIT(f->gone);
    Py_VISIT(f->fns);
    Py_VISIT(f->nondict);
    return 0;
}

static void inplace_dealloc(PyObject *self) {
    PyObject_GC_UnTrack(self);
    inplace_clear(self);
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject InPlaceType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "veil.redact._cplan.InPlace",
    .tp_basicsize = sizeof(InPlaceObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "An object whose unnamed keys a field plan keeps, changed in place (see veil.redact._compile).",
    .tp_new = PyType_GenericNew,
    .tp_init = inplace_init,
    .tp_dealloc = inplace_dealloc,
    .tp_traverse = inplace_traverse,
    .tp_clear = inplace_clear,
    .tp_call = handler_call,
    .tp_vectorcall_offset = offsetof(InPlaceObject, vectorcall),
};

/* Whether no container in `node` is nested deeper than `remaining` levels (veil.redact.reading's depth
 * check, the same walk: exact dicts and lists are containers, anything else is a leaf). */
static int depth_ok(PyObject *node, Py_ssize_t remaining) {
    PyTypeObject *t = Py_TYPE(node);
    if (t == &PyDict_Type) {
        if (remaining <= 0) return 0;
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(node, &pos, &k, &v)) {
            PyTypeObject *tv = Py_TYPE(v);
            if ((tv == &PyDict_Type || tv == &PyList_Type) && !depth_ok(v, remaining - 1)) return 0;
        }
        return 1;
    }
    if (t == &PyList_Type) {
        if (remaining <= 0) return 0;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(node); i++) {
            PyObject *v = PyList_GET_ITEM(node, i);
            PyTypeObject *tv = Py_TYPE(v);
            if ((tv == &PyDict_Type || tv == &PyList_Type) && !depth_ok(v, remaining - 1)) return 0;
        }
    }
    return 1;
}

#define MAX_DEPTH_LIMIT 4096

static PyObject *depth_ok_py(PyObject *module, PyObject *args) {
    PyObject *node;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "On:depth_ok", &node, &limit)) return NULL;
    if (limit > MAX_DEPTH_LIMIT) return PyErr_Format(PyExc_ValueError, "a depth limit above %d", MAX_DEPTH_LIMIT);
    /* the walk recurses at most `limit` levels (a deeper node stops it): bounded, and no callback runs */
    return PyBool_FromLong(depth_ok(node, limit));
}

static PyMethodDef module_methods[] = {
    {"depth_ok", depth_ok_py, METH_VARARGS, "depth_ok(node, limit): no container nested deeper than limit."},
    {"keyed_hexes", keyed_hexes, METH_VARARGS,
     "keyed_hexes(key, context, values, n): veil.keys.keyed_hashes of ASCII strings (None for others)."},
    {"configure", configure, METH_VARARGS, "configure(GONE, TransformTypeError, DEPTH): the compiler's sentinels."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_cplan", "The filtered-object loop of veil's field plans, compiled.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__cplan(void) {
    if (PyType_Ready(&FilterType) < 0 || PyType_Ready(&InPlaceType) < 0 || PyType_Ready(&XformType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Filter", (PyObject *)&FilterType) < 0 ||
        PyModule_AddObjectRef(m, "InPlace", (PyObject *)&InPlaceType) < 0 ||
        PyModule_AddObjectRef(m, "Xform", (PyObject *)&XformType) < 0 ||
        PyModule_AddIntConstant(m, "KEEP", K_KEEP) < 0 || PyModule_AddIntConstant(m, "FIXED", K_FIXED) < 0 ||
        PyModule_AddIntConstant(m, "TRANSFORM", K_TRANSFORM) < 0 || PyModule_AddIntConstant(m, "OBJECT", K_OBJECT) < 0 ||
        PyModule_AddIntConstant(m, "ARRAY", K_ARRAY) < 0 || PyModule_AddIntConstant(m, "SCRUB", K_SCRUB) < 0 ||
        PyModule_AddIntConstant(m, "CALL", K_CALL) < 0 || PyModule_AddIntConstant(m, "X_MASK", X_MASK) < 0 ||
        PyModule_AddIntConstant(m, "X_HASH", X_HASH) < 0 || PyModule_AddIntConstant(m, "X_PREFIX", X_PREFIX) < 0 ||
        PyModule_AddIntConstant(m, "X_BUCKET", X_BUCKET) < 0 || PyModule_AddIntConstant(m, "X_DATE", X_DATE) < 0 ||
        PyModule_AddIntConstant(m, "X_ROUND", X_ROUND) < 0 || PyModule_AddIntConstant(m, "X_IP", X_IP) < 0 ||
        PyModule_AddIntConstant(m, "ARG_MAX", ARG_MAX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
