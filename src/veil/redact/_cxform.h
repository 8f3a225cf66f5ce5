/* veil.redact._cplan's transforms (_cxform.c), for the field plan's loop (_cplan.c). */
#ifndef VEIL_CXFORM_H
#define VEIL_CXFORM_H
#include <Python.h>

extern PyTypeObject XformType;
/* xform(value): the transform's result, or NULL with an exception set (as the Python transform's call) */
PyObject *xform_apply(PyObject *self, PyObject *v);
/* keyed_hexes(key, context, values, n) (module function) */
PyObject *keyed_hexes(PyObject *module, PyObject *args);

#endif
