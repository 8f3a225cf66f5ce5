/* veil.redact._cplan's transforms: the common values of veil.redact.transforms, compiled.
 *
 * An `Xform` is made by veil.redact.native.fast() from one transform of veil.redact.transforms (the
 * reference: it decides every value this file does not). It takes the values a field plan meets most,
 * such as an ASCII string to hash or mask, a dotted-quad address, a plain date or a float to round, and
 * hands anything else to that Python transform: other types, non-ASCII text, numbers out of range and
 * every refusal (TransformTypeError). So a value either gets the same result here as there, or goes
 * there. tests/redact/test_native_transforms.py compares the two on random values and arguments.
 *
 * The field plan's loop (_cplan.c) calls xform_apply() directly; Python code calls the object.
 * HMAC-SHA256 (RFC 2104) is OpenSSL's SHA-256 on the inner and outer states keyed once per transform,
 * as veil.keys.hmac_sha256 does with hashlib.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_CTX: a plain struct copied per MAC, no context allocation */
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "_cxform.h"

/* X_* and ARG_MAX (_cxform.h) are also the module's constants, which veil.redact.native.fast reads */

/* The SHA-256 states after absorbing key ^ ipad and key ^ opad (RFC 2104). */
typedef struct {
    SHA256_CTX inner, outer;
} Keyed;

static void keyed_init(Keyed *kd, const void *key, size_t len) {
    unsigned char k[SHA256_CBLOCK] = {0}, pad[SHA256_CBLOCK];
    if (len > SHA256_CBLOCK) {
        SHA256(key, len, k);
    } else {
        memcpy(k, key, len);
    }
    for (int i = 0; i < SHA256_CBLOCK; i++) pad[i] = k[i] ^ 0x36;
    SHA256_Init(&kd->inner);
    SHA256_Update(&kd->inner, pad, sizeof pad);
    for (int i = 0; i < SHA256_CBLOCK; i++) pad[i] = k[i] ^ 0x5c;
    SHA256_Init(&kd->outer);
    SHA256_Update(&kd->outer, pad, sizeof pad);
    OPENSSL_cleanse(k, sizeof k);
    OPENSSL_cleanse(pad, sizeof pad);
}

static void hmac_final(const Keyed *kd, const unsigned char *msg, size_t len, unsigned char out[32]) {
    SHA256_CTX c = kd->inner;
    unsigned char d[32];
    SHA256_Update(&c, msg, len);
    SHA256_Final(d, &c);
    c = kd->outer;
    SHA256_Update(&c, d, sizeof d);
    SHA256_Final(out, &c);
}

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int kind;
    PyObject *py;     /* the Python transform: the reference, and the path for every other value */
    long a, b;        /* MASK first, last; HASH -, hex digits; PREFIX n; BUCKET width; DATE 1 = year;
                       * ROUND decimals; IP v4 prefix */
    char ch;          /* MASK: the (ASCII) mask character */
    PyObject *prefix; /* HASH: the result's prefix (ASCII) */
    Keyed keyed;      /* HASH */
} XformObject;

static inline PyObject *fallback(XformObject *x, PyObject *v) { return PyObject_CallOneArg(x->py, v); }

static const char HEX[] = "0123456789abcdef";

/* The first n (at most 64) hex digits of a SHA-256 MAC, as bytes.hex()[:n] writes them. */
static void hex_digits(const unsigned char mac[32], Py_ssize_t n, char *dst) {
    for (Py_ssize_t j = 0; j < n; j++) dst[j] = HEX[j % 2 ? mac[j / 2] & 15 : mac[j / 2] >> 4];
}

/* ---- mask ---------------------------------------------------------------------------------------- */

static PyObject *do_mask(XformObject *x, PyObject *v) {
    PyObject *text;
    if (PyUnicode_CheckExact(v)) {
        text = Py_NewRef(v);
    } else if (PyLong_CheckExact(v) || PyFloat_CheckExact(v)) {
        text = PyObject_Str(v); /* str(value), as the Python transform (a huge int raises the same error) */
        if (text == NULL) return NULL;
    } else {
        return fallback(x, v);
    }
    if (!PyUnicode_IS_ASCII(text)) {
        Py_DECREF(text);
        return fallback(x, v);
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), first = x->a, last = x->b;
    PyObject *out = PyUnicode_New(n, 127);
    if (out == NULL) {
        Py_DECREF(text);
        return NULL;
    }
    char *dst = (char *)PyUnicode_DATA(out);
    const char *src = (const char *)PyUnicode_DATA(text);
    if (first >= n || last >= n - first) { /* first + last >= n, without the sum (a 32-bit Py_ssize_t) */
        memset(dst, x->ch, (size_t)n);
    } else {
        memcpy(dst, src, (size_t)first);
        memset(dst + first, x->ch, (size_t)(n - first - last));
        memcpy(dst + n - last, src + n - last, (size_t)last);
    }
    Py_DECREF(text);
    return out;
}

/* ---- hash ---------------------------------------------------------------------------------------- */

/* json.encoder.encode_basestring of an ASCII string, quotes included: the bytes the Python transform
 * MACs. Returns the length written to buf (at most 6 * n + 2). */
static size_t json_ascii(const unsigned char *s, Py_ssize_t n, unsigned char *buf) {
    size_t j = 0;
    buf[j++] = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            buf[j++] = c;
            continue;
        }
        buf[j++] = '\\';
        switch (c) {
        case '"': buf[j++] = '"'; break;
        case '\\': buf[j++] = '\\'; break;
        case '\n': buf[j++] = 'n'; break;
        case '\r': buf[j++] = 'r'; break;
        case '\t': buf[j++] = 't'; break;
        case '\b': buf[j++] = 'b'; break;
        case '\f': buf[j++] = 'f'; break;
        default:
            buf[j++] = 'u';
            buf[j++] = '0';
            buf[j++] = '0';
            buf[j++] = HEX[c >> 4];
            buf[j++] = HEX[c & 15];
        }
    }
    buf[j++] = '"';
    return j;
}

static PyObject *hashed(XformObject *x, const unsigned char *msg, size_t len) {
    unsigned char mac[32];
    hmac_final(&x->keyed, msg, len, mac);
    Py_ssize_t plen = PyUnicode_GET_LENGTH(x->prefix);
    PyObject *out = PyUnicode_New(plen + x->b, 127);
    if (out == NULL) return NULL;
    char *dst = (char *)PyUnicode_DATA(out);
    memcpy(dst, PyUnicode_DATA(x->prefix), (size_t)plen);
    hex_digits(mac, x->b, dst + plen);
    return out;
}

#define STACK_TEXT 512

static PyObject *do_hash(XformObject *x, PyObject *v) {
    if (v == Py_None) return hashed(x, (const unsigned char *)"null", 4);
    if (v == Py_True) return hashed(x, (const unsigned char *)"true", 4);
    if (v == Py_False) return hashed(x, (const unsigned char *)"false", 5);
    if (PyLong_CheckExact(v)) {
        PyObject *text = PyLong_Type.tp_repr(v); /* int.__repr__, as the Python transform */
        if (text == NULL) return NULL;
        PyObject *r = hashed(x, PyUnicode_DATA(text), (size_t)PyUnicode_GET_LENGTH(text));
        Py_DECREF(text);
        return r;
    }
    if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v)) return fallback(x, v);
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    if ((size_t)n > (PY_SSIZE_T_MAX - 2) / 6) return fallback(x, v); /* 6 * n + 2 would wrap (32-bit) */
    unsigned char small[STACK_TEXT * 6 + 2], *buf = small;
    if (n > STACK_TEXT) {
        buf = PyMem_Malloc((size_t)n * 6 + 2);
        if (buf == NULL) return PyErr_NoMemory();
    }
    size_t len = json_ascii(PyUnicode_DATA(v), n, buf);
    PyObject *r = hashed(x, buf, len);
    if (buf != small) PyMem_Free(buf);
    return r;
}

/* ---- generalize ---------------------------------------------------------------------------------- */

static PyObject *do_prefix(XformObject *x, PyObject *v) {
    if (!PyUnicode_CheckExact(v)) return fallback(x, v);
    return PyUnicode_Substring(v, 0, x->a); /* value[:n] (the string itself when n reaches its end) */
}

static PyObject *do_bucket(XformObject *x, PyObject *v) {
    if (!PyLong_CheckExact(v)) return fallback(x, v);
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(v, &overflow), w = x->a;
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (overflow || n > (1LL << 60) || n < -(1LL << 60)) return fallback(x, v);
    long long q = n / w;
    if (n % w != 0 && n < 0) q--; /* floor division, as Python's // (w > 0) */
    char buf[64];
    int len = snprintf(buf, sizeof buf, "%lld-%lld", q * w, q * w + w - 1);
    return PyUnicode_FromStringAndSize(buf, len);
}

static int days_in(int year, int month) {
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return days[month - 1] + (month == 2 && leap);
}

static inline int digits(const char *s, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static PyObject *do_date(XformObject *x, PyObject *v) {
    /* YYYY-MM-DD, the one form taken here; datetime.fromisoformat decides every other */
    if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v) || PyUnicode_GET_LENGTH(v) != 10) return fallback(x, v);
    const char *s = (const char *)PyUnicode_DATA(v);
    int y = digits(s, 4), m = digits(s + 5, 2), d = digits(s + 8, 2);
    if (s[4] != '-' || s[7] != '-' || y < 1 || m < 1 || m > 12 || d < 1 || d > days_in(y, m)) return fallback(x, v);
    char buf[8];
    memcpy(buf, s, 7);
    return PyUnicode_FromStringAndSize(buf, x->a ? 4 : 7);
}

static PyObject *do_round(XformObject *x, PyObject *v) {
    if (PyLong_CheckExact(v)) return Py_NewRef(v); /* round(int, d >= 0) is the int (d < 0 stays in Python) */
    if (!PyFloat_CheckExact(v)) return fallback(x, v);
    double d = PyFloat_AS_DOUBLE(v);
    if (!(d > -1e15 && d < 1e15)) return fallback(x, v); /* NaN, infinities and large values */
    /* The common case in floating point: y = d * 10^n is within half an ulp of the exact product, so
     * away from a tie (.5) it rounds to the same integer r as the exact value; r and 10^n are exact, so
     * r / 10^n is the double nearest the rounded decimal, which is what round() returns. Near a tie, or
     * where y is too large for that margin, the exact way below decides. */
    static const double POW10[16] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
                                     1e13, 1e14, 1e15};
    double p = POW10[x->a], y = d * p;
    if (y > -0x1p40 && y < 0x1p40) {
        double r = nearbyint(y);
        if (fabs(y - r) < 0.5 - 0x1p-10) return PyFloat_FromDouble(r / p);
    }
    /* round(x, n) is the double nearest the correctly rounded decimal of x with n digits (float.__round__:
     * _Py_dg_dtoa mode 3, then strtod); the 'f' format with precision n is the same rounding */
    char *s = PyOS_double_to_string(d, 'f', (int)x->a, 0, NULL);
    if (s == NULL) return NULL;
    double r = PyOS_string_to_double(s, NULL, NULL);
    PyMem_Free(s);
    if (r == -1.0 && PyErr_Occurred()) return NULL;
    return PyFloat_FromDouble(r);
}

static PyObject *do_ip(XformObject *x, PyObject *v) {
    /* four decimal octets of 1-3 digits, no leading zero, at most 255 (as _ipv4_int); else ipaddress */
    if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v)) return fallback(x, v);
    const char *s = (const char *)PyUnicode_DATA(v);
    Py_ssize_t n = PyUnicode_GET_LENGTH(v), i = 0;
    unsigned long addr = 0;
    for (int part = 0; part < 4; part++) {
        Py_ssize_t start = i;
        int octet = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9' && i - start < 4) octet = octet * 10 + (s[i++] - '0');
        Py_ssize_t len = i - start;
        if (len == 0 || len > 3 || (len > 1 && s[start] == '0') || octet > 255) return fallback(x, v);
        if (part < 3) {
            if (i >= n || s[i] != '.') return fallback(x, v);
            i++;
        }
        addr = (addr << 8) | (unsigned long)octet;
    }
    if (i != n) return fallback(x, v);
    unsigned long mask = x->a == 0 ? 0 : (0xffffffffUL << (32 - x->a)) & 0xffffffffUL;
    addr &= mask;
    char buf[16];
    int len = snprintf(buf, sizeof buf, "%lu.%lu.%lu.%lu", addr >> 24, (addr >> 16) & 255, (addr >> 8) & 255,
                       addr & 255);
    return PyUnicode_FromStringAndSize(buf, len);
}

/* ---- the type ------------------------------------------------------------------------------------ */

PyObject *xform_apply(PyObject *self, PyObject *v) {
    XformObject *x = (XformObject *)self;
    switch (x->kind) {
    case X_MASK: return do_mask(x, v);
    case X_HASH: return do_hash(x, v);
    case X_PREFIX: return do_prefix(x, v);
    case X_BUCKET: return do_bucket(x, v);
    case X_DATE: return do_date(x, v);
    case X_ROUND: return do_round(x, v);
    case X_IP: return do_ip(x, v);
    default:
        PyErr_SetString(PyExc_TypeError, "the transform is not initialized");
        return NULL;
    }
}

static PyObject *xform_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a transform takes one value");
        return NULL;
    }
    return xform_apply(self, args[0]);
}

static PyObject *xform_call(PyObject *self, PyObject *args, PyObject *kwds) {
    if (((XformObject *)self)->kind == 0) {
        PyErr_SetString(PyExc_TypeError, "the transform is not initialized");
        return NULL;
    }
    return PyVectorcall_Call(self, args, kwds);
}

static int refuse(const char *what) {
    PyErr_SetString(PyExc_ValueError, what);
    return -1;
}

static int ascii_str(PyObject *s) { return PyUnicode_CheckExact(s) && PyUnicode_IS_ASCII(s); }

/* Xform(py, kind, a, b, text, key): made by veil.redact.native.fast, which reads them off `py`. */
static int xform_init(PyObject *self, PyObject *args, PyObject *kwds) {
    XformObject *x = (XformObject *)self;
    PyObject *py, *text;
    int kind;
    long a, b;
    Py_buffer key = {0};
    static char *names[] = {"py", "kind", "a", "b", "text", "key", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OillOy*:Xform", names, &py, &kind, &a, &b, &text, &key))
        return -1;
    int rc = -1;
    if (x->kind != 0) {
        refuse("an Xform is initialized once");
    } else if (!PyCallable_Check(py)) {
        refuse("py must be the Python transform");
    } else if (kind < X_MASK || kind > X_IP || a < 0 || a > ARG_MAX || b < 0 || b > ARG_MAX) {
        refuse("an argument is out of range");
    } else if ((kind == X_BUCKET && a == 0) || (kind == X_ROUND && a > 15) || (kind == X_IP && a > 32)) {
        refuse("an argument is out of range");
    } else if (kind == X_MASK && !(ascii_str(text) && PyUnicode_GET_LENGTH(text) == 1)) {
        refuse("mask needs one ASCII character");
    } else if (kind == X_HASH && !ascii_str(text)) {
        refuse("hash needs an ASCII prefix");
    } else if (kind == X_HASH && (b < 1 || b > 64)) {
        refuse("hash keeps 1 to 64 hex digits");
    } else {
        if (kind == X_HASH) {
            keyed_init(&x->keyed, key.buf, (size_t)key.len);
            x->prefix = Py_NewRef(text);
        }
        if (kind == X_MASK) x->ch = (char)PyUnicode_READ_CHAR(text, 0);
        x->py = Py_NewRef(py);
        x->a = a;
        x->b = b;
        x->kind = kind;
        x->vectorcall = xform_vectorcall;
        rc = 0;
    }
    PyBuffer_Release(&key);
    return rc;
}

static int xform_clear(PyObject *self) {
    XformObject *x = (XformObject *)self;
    x->kind = 0; /* cleared (a cycle being collected): called again, it refuses instead of reading NULL */
    x->vectorcall = NULL;
    Py_CLEAR(x->py);
    Py_CLEAR(x->prefix);
    return 0;
}

static int xform_traverse(PyObject *self, visitproc visit, void *arg) {
    XformObject *x = (XformObject *)self;
    Py_VISIT(x->py);
    Py_VISIT(x->prefix);
    return 0;
}

static void xform_dealloc(PyObject *self) {
    XformObject *x = (XformObject *)self;
    PyObject_GC_UnTrack(self);
    xform_clear(self);
    OPENSSL_cleanse(&x->keyed, sizeof x->keyed);
    Py_TYPE(self)->tp_free(self);
}

static PyObject *xform_repr(PyObject *self) {
    XformObject *x = (XformObject *)self;
    return x->py ? PyUnicode_FromFormat("<native %R>", x->py) : PyUnicode_FromString("<native transform>");
}

PyTypeObject XformType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "veil.redact._cplan.Xform",
    .tp_basicsize = sizeof(XformObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "One transform of veil.redact.transforms on its common values (see veil.redact.native.fast).",
    .tp_new = PyType_GenericNew,
    .tp_init = xform_init,
    .tp_dealloc = xform_dealloc,
    .tp_traverse = xform_traverse,
    .tp_clear = xform_clear,
    .tp_call = xform_call,
    .tp_repr = xform_repr,
    .tp_vectorcall_offset = offsetof(XformObject, vectorcall),
};

/* keyed_hexes(key, context, values, n): veil.keys.keyed_hashes, the first n hex digits of
 * HMAC-SHA256(key, context + b"\0" + value) per value, for exact ASCII strings; None for a list holding
 * anything else (the caller then runs the Python). */
PyObject *keyed_hexes(PyObject *module, PyObject *args) {
    Py_buffer key = {0}, ctx = {0};
    PyObject *values;
    Py_ssize_t nhex;
    if (!PyArg_ParseTuple(args, "y*y*O!n:keyed_hexes", &key, &ctx, &PyList_Type, &values, &nhex)) return NULL;
    PyObject *out = NULL;
    if (nhex < 0 || nhex > 64) {
        PyErr_SetString(PyExc_ValueError, "n must be between 0 and 64");
        goto done;
    }
    Py_ssize_t n = PyList_GET_SIZE(values);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!ascii_str(PyList_GET_ITEM(values, i))) {
            out = Py_NewRef(Py_None);
            goto done;
        }
    }
    Keyed kd;
    keyed_init(&kd, key.buf, (size_t)key.len);
    SHA256_Update(&kd.inner, ctx.buf, (size_t)ctx.len);
    SHA256_Update(&kd.inner, "", 1); /* the context's terminating NUL */
    out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *v = PyList_GET_ITEM(values, i);
        unsigned char mac[32];
        hmac_final(&kd, PyUnicode_DATA(v), (size_t)PyUnicode_GET_LENGTH(v), mac);
        PyObject *h = PyUnicode_New(nhex, 127);
        if (h == NULL) {
            Py_CLEAR(out);
            break;
        }
        hex_digits(mac, nhex, (char *)PyUnicode_DATA(h));
        PyList_SET_ITEM(out, i, h);
    }
    OPENSSL_cleanse(&kd, sizeof kd);
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&ctx);
    return out;
}
