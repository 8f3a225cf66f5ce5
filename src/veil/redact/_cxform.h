/* veil.redact._cplan's transforms (_cxform.c), for the field plan's loop (_cplan.c). */
#ifndef VEIL_CXFORM_H
#define VEIL_CXFORM_H
#include <Python.h>

/* Xform kinds, and the largest argument it takes (larger ones stay with the Python transform) */
enum { X_MASK = 1, X_HASH = 2, X_PREFIX = 3, X_BUCKET = 4, X_DATE = 5, X_ROUND = 6, X_IP = 7 };
#define ARG_MAX 0x7fffffffL

extern PyTypeObject XformType;
/* xform(value): the transform's result, or NULL with an exception set (as the Python transform's call) */
PyObject *xform_apply(PyObject *self, PyObject *v);
/* keyed_hexes(key, context, values, n) (module function) */
PyObject *keyed_hexes(PyObject *module, PyObject *args);

#endif
