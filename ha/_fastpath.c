/* ha._fastpath: renewals in place answered in C, datagrams received and sent in batches.
 *
 * The pure-Python path (ha/transport.py, HomeAgent.handle_datagram and its renewal cache,
 * ha/engine/renewals.py) is the reference; this module does only what that cache does for a repeat
 * of a remembered renewal, and hands everything else back to it:
 *
 *   - Batch.receive(): recvmmsg(2) of up to SLOTS datagrams from the home agent's unicast socket;
 *   - Batch.process(): each datagram, in order, looked up in the engine's renewal cache (a dict
 *     from the request's first 16 bytes to a Renewal whose ``fast`` attribute is an Entry); a hit
 *     is a datagram of the entry's exact layout (its extension bytes, whatever they are), from the
 *     entry's peer, whose authenticator verifies (HMAC-MD5 or keyed-MD5 prefix+suffix, OpenSSL's
 *     libcrypto MD5 from states the key determines) and whose Identification is fresh (RFC 5944
 *     §5.7 timestamp: within the tolerance, newer than the last accepted): its reply is built
 *     into the outbox, tentatively.  The first datagram that is not a hit stops the pass: Python
 *     decides it (the full path), so a batch keeps the order of the datagrams;
 *   - Python (ha/fastpath.py) applies the hits to the engine, which re-checks everything else the
 *     entry depends on, and keeps the replies of those it applied (Batch.commit);
 *   - Batch.send(): sendmmsg(2) of the outbox, after the burst's journal write.
 *
 * No decision is made here that Python would not make: a datagram whose checks fail goes to the
 * Python path unchanged, which repeats them, denies, counts and logs as it always does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define OPENSSL_SUPPRESS_DEPRECATED 1 /* MD5_* : the low-level API lets a state be copied by value */
#include <openssl/crypto.h>
#include <openssl/md5.h>

#define SLOTS 32                 /* datagrams per recvmmsg */
#define DATAGRAM 65536           /* a whole UDP datagram (RFC 3519 tunnel data shares the port) */
#define MAX_REPLY 1024           /* longest reply an entry may build */
#define MAX_EXTENSION 1024       /* longest extension block an entry may match */
#define AUTH 16
#define FIXED 24                 /* the request's fixed part (RFC 5944 §3.3) */
#define REPLY_FIXED 20           /* the reply's (§3.4) */
#define NTP_UNIX_OFFSET 2208988800LL

/* --- Entry: what one remembered renewal needs in C ------------------------------------------- */

typedef struct {
    PyObject_HEAD
    uint64_t last;               /* the last accepted Identification */
    long tolerance;              /* replay tolerance, seconds */
    int keyed;                   /* 0: HMAC-MD5; 1: keyed-MD5 prefix+suffix */
    MD5_CTX inner, outer;        /* HMAC pads absorbed; keyed-MD5: the key prefix absorbed (inner) */
    unsigned char *key;          /* keyed-MD5's suffix */
    Py_ssize_t key_len;
    uint32_t source_ip;          /* network order: the peer the requests come from (and replies go to) */
    uint16_t source_port;        /* network order */
    unsigned char *extension;    /* the request's bytes between the fixed part and the authenticator */
    Py_ssize_t extension_len;
    unsigned char reply_head[12];
    unsigned char *reply_extension;
    Py_ssize_t reply_extension_len;
} Entry;

static void Entry_dealloc(Entry *self) {
    OPENSSL_cleanse(&self->inner, sizeof self->inner);
    OPENSSL_cleanse(&self->outer, sizeof self->outer);
    if (self->key != NULL) {
        OPENSSL_cleanse(self->key, (size_t)self->key_len);
    }
    PyMem_Free(self->key);
    PyMem_Free(self->extension);
    PyMem_Free(self->reply_extension);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static unsigned char *copy_bytes(const Py_buffer *view) {
    unsigned char *out = PyMem_Malloc(view->len > 0 ? (size_t)view->len : 1);
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(out, view->buf, (size_t)view->len);
    return out;
}

static int Entry_init(Entry *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"extension", "keyed", "key", "tolerance", "last", "reply_head",
                            "reply_extension", "source_ip", "source_port", NULL};
    Py_buffer extension, key, head, reply_extension;
    int keyed;
    long tolerance;
    unsigned long long last;
    unsigned long source_ip;
    int source_port;
    if (self->extension != NULL) {
        PyErr_SetString(PyExc_TypeError, "an Entry is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*py*lKy*y*ki", names, &extension, &keyed, &key,
                                     &tolerance, &last, &head, &reply_extension, &source_ip,
                                     &source_port)) {
        return -1;
    }
    int ok = -1;
    if (head.len != 12 || extension.len > MAX_EXTENSION ||
        REPLY_FIXED + reply_extension.len + AUTH > MAX_REPLY || key.len < 1 ||
        source_ip > 0xFFFFFFFFUL || source_port < 0 || source_port > 0xFFFF || tolerance < 0) {
        PyErr_SetString(PyExc_ValueError, "Entry: a field is out of range");
        goto done;
    }
    self->keyed = keyed;
    self->tolerance = tolerance;
    self->last = last;
    self->source_ip = htonl((uint32_t)source_ip);
    self->source_port = htons((uint16_t)source_port);
    memcpy(self->reply_head, head.buf, 12);
    if ((self->extension = copy_bytes(&extension)) == NULL ||
        (self->reply_extension = copy_bytes(&reply_extension)) == NULL ||
        (self->key = copy_bytes(&key)) == NULL) {
        goto done;
    }
    self->extension_len = extension.len;
    self->reply_extension_len = reply_extension.len;
    self->key_len = key.len;
    if (keyed) { /* MD5(key | covered | key) */
        MD5_Init(&self->inner);
        MD5_Update(&self->inner, key.buf, (size_t)key.len);
    } else { /* RFC 2104: a key longer than a block is hashed first, then padded to the block */
        unsigned char block[64] = {0}, ipad[64], opad[64];
        if (key.len > 64) {
            MD5(key.buf, (size_t)key.len, block);
        } else {
            memcpy(block, key.buf, (size_t)key.len);
        }
        for (int i = 0; i < 64; i++) {
            ipad[i] = block[i] ^ 0x36;
            opad[i] = block[i] ^ 0x5c;
        }
        MD5_Init(&self->inner);
        MD5_Update(&self->inner, ipad, 64);
        MD5_Init(&self->outer);
        MD5_Update(&self->outer, opad, 64);
        OPENSSL_cleanse(block, sizeof block);
        OPENSSL_cleanse(ipad, sizeof ipad);
        OPENSSL_cleanse(opad, sizeof opad);
    }
    ok = 0;
done:
    PyBuffer_Release(&extension);
    PyBuffer_Release(&key);
    PyBuffer_Release(&head);
    PyBuffer_Release(&reply_extension);
    return ok;
}

static void authenticator(const Entry *e, const unsigned char *covered, size_t len, unsigned char out[AUTH]) {
    MD5_CTX ctx = e->inner;
    MD5_Update(&ctx, covered, len);
    if (e->keyed) {
        MD5_Update(&ctx, e->key, (size_t)e->key_len);
        MD5_Final(out, &ctx);
        return;
    }
    unsigned char inner[AUTH];
    MD5_Final(inner, &ctx);
    ctx = e->outer;
    MD5_Update(&ctx, inner, AUTH);
    MD5_Final(out, &ctx);
}

static PyObject *Entry_authenticator(Entry *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    unsigned char out[AUTH];
    authenticator(self, view.buf, (size_t)view.len, out);
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)out, AUTH);
}

static PyMemberDef Entry_members[] = {
    {"last", T_ULONGLONG, offsetof(Entry, last), 0, "the last accepted Identification"},
    {NULL},
};

static PyMethodDef Entry_methods[] = {
    {"authenticator", (PyCFunction)Entry_authenticator, METH_O, "the 16-byte authenticator of bytes"},
    {NULL},
};

static PyTypeObject EntryType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ha._fastpath.Entry",
    .tp_basicsize = sizeof(Entry),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "What the C path needs to answer a repeat of one remembered renewal.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Entry_init,
    .tp_dealloc = (destructor)Entry_dealloc,
    .tp_members = Entry_members,
    .tp_methods = Entry_methods,
};

/* --- Batch: receive, match, reply ------------------------------------------------------------- */

typedef struct {
    unsigned char data[MAX_REPLY];
    size_t len;
    struct sockaddr_in to;
} Reply;

typedef struct {
    PyObject_HEAD
    int fd;
    int count;                          /* datagrams in the slots */
    unsigned char *buffers;             /* SLOTS x DATAGRAM */
    struct mmsghdr in[SLOTS];
    struct iovec in_iov[SLOTS];
    struct sockaddr_in from[SLOTS];
    Reply *outbox;
    int capacity, committed, tentative; /* outbox: kept replies, then those of the last pass */
    unsigned long long hits, received;
    PyObject *fast_name;
} Batch;

static void Batch_dealloc(Batch *self) {
    PyMem_Free(self->buffers);
    PyMem_Free(self->outbox);
    Py_XDECREF(self->fast_name);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Batch_init(Batch *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"fd", "capacity", NULL};
    int fd, capacity = 256;
    if (self->buffers != NULL) {
        PyErr_SetString(PyExc_TypeError, "a Batch is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|i", names, &fd, &capacity)) {
        return -1;
    }
    if (capacity < SLOTS) {
        PyErr_SetString(PyExc_ValueError, "capacity must hold at least one receive");
        return -1;
    }
    self->fd = fd;
    self->capacity = capacity;
    self->buffers = PyMem_Malloc((size_t)SLOTS * DATAGRAM);
    self->outbox = PyMem_Malloc((size_t)capacity * sizeof(Reply));
    self->fast_name = PyUnicode_InternFromString("fast");
    if (self->buffers == NULL || self->outbox == NULL || self->fast_name == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < SLOTS; i++) {
        self->in_iov[i].iov_base = self->buffers + (size_t)i * DATAGRAM;
        self->in_iov[i].iov_len = DATAGRAM;
    }
    return 0;
}

/* receive(): read up to SLOTS datagrams (fewer when the outbox could not answer them all); their
 * count, 0 when none is waiting; OSError as recvfrom would raise it. */
static PyObject *Batch_receive(Batch *self, PyObject *Py_UNUSED(ignored)) {
    int room = self->capacity - self->committed;
    int want = room < SLOTS ? room : SLOTS;
    self->count = 0;
    if (self->fd < 0 || want <= 0) {
        return PyLong_FromLong(0);
    }
    for (int i = 0; i < want; i++) {
        memset(&self->in[i].msg_hdr, 0, sizeof self->in[i].msg_hdr);
        self->in[i].msg_hdr.msg_name = &self->from[i];
        self->in[i].msg_hdr.msg_namelen = sizeof self->from[i];
        self->in[i].msg_hdr.msg_iov = &self->in_iov[i];
        self->in[i].msg_hdr.msg_iovlen = 1;
        self->in[i].msg_len = 0;
    }
    int got = recvmmsg(self->fd, self->in, (unsigned int)want, MSG_DONTWAIT, NULL);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return PyLong_FromLong(0);
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    for (int i = 0; i < got; i++) { /* a non-IPv4 sender (never on an AF_INET socket) matches nothing */
        if (self->in[i].msg_hdr.msg_namelen < sizeof(struct sockaddr_in) ||
            self->from[i].sin_family != AF_INET) {
            memset(&self->from[i], 0, sizeof self->from[i]);
        }
    }
    self->count = got;
    self->received += (unsigned long long)got;
    return PyLong_FromLong(got);
}

/* load(datagrams): fill the slots as receive() would, without a socket (tests, fuzzing):
 * a sequence of (bytes, source address as int, source port). */
static PyObject *Batch_load(Batch *self, PyObject *seq) {
    PyObject *fast = PySequence_Fast(seq, "load() takes a sequence of (bytes, int, int)");
    if (fast == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    int room = self->capacity - self->committed;
    if (n > SLOTS || n > room) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "more datagrams than the slots (or the outbox) hold");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view;
        unsigned long ip;
        int port;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "y*ki", &view, &ip, &port)) {
            Py_DECREF(fast);
            return NULL;
        }
        if (view.len > DATAGRAM || ip > 0xFFFFFFFFUL || port < 0 || port > 0xFFFF) {
            PyBuffer_Release(&view);
            Py_DECREF(fast);
            PyErr_SetString(PyExc_ValueError, "load(): a datagram or address out of range");
            return NULL;
        }
        memcpy(self->in_iov[i].iov_base, view.buf, (size_t)view.len);
        self->in[i].msg_len = (unsigned int)view.len;
        memset(&self->from[i], 0, sizeof self->from[i]);
        self->from[i].sin_family = AF_INET;
        self->from[i].sin_addr.s_addr = htonl((uint32_t)ip);
        self->from[i].sin_port = htons((uint16_t)port);
        PyBuffer_Release(&view);
    }
    Py_DECREF(fast);
    self->count = (int)n;
    self->received += (unsigned long long)n;
    Py_RETURN_NONE;
}

/* RFC 5944 §5.7 with the timestamp method, as ha.protocol.replay.check_timestamp: the high half within
 * ``tolerance`` seconds of now (RFC 1982 distance), the whole newer than the last accepted one. */
static int fresh(uint64_t identification, uint64_t last, double wallclock, long tolerance) {
    int64_t now = ((int64_t)floor(wallclock) + NTP_UNIX_OFFSET) & 0xFFFFFFFFLL;
    int64_t skew = (int64_t)(((identification >> 32) - (uint64_t)now) & 0xFFFFFFFFULL);
    if (skew >= 0x80000000LL) {
        skew -= 0x100000000LL;
    }
    if (skew < -tolerance || skew > tolerance) {
        return 0;
    }
    uint64_t ahead = identification - last; /* mod 2^64 */
    return ahead != 0 && ahead < 0x8000000000000000ULL;
}

static uint64_t load_be64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* One datagram against the cache: its entry and Renewal when it is a hit (new reference to the
 * Renewal), NULL without an exception when it is not, NULL with one on failure. */
static PyObject *lookup(Batch *self, PyObject *renewals, const unsigned char *data, size_t len,
                        const struct sockaddr_in *from, Entry **entry) {
    if (len < FIXED + AUTH || data[0] != 1) {
        return NULL;
    }
    PyObject *key = PyBytes_FromStringAndSize((const char *)data, 16);
    if (key == NULL) {
        return NULL;
    }
    PyObject *renewal = PyDict_GetItemWithError(renewals, key); /* borrowed */
    Py_DECREF(key);
    if (renewal == NULL) {
        return NULL;
    }
    Py_INCREF(renewal);
    PyObject *fast = PyObject_GetAttr(renewal, self->fast_name);
    if (fast == NULL) {
        Py_DECREF(renewal);
        return NULL;
    }
    if (!PyObject_TypeCheck(fast, &EntryType)) { /* None: this entry is the Python path's alone */
        Py_DECREF(fast);
        Py_DECREF(renewal);
        return NULL;
    }
    Entry *e = (Entry *)fast;
    if (len != (size_t)(FIXED + e->extension_len + AUTH) ||
        memcmp(data + FIXED, e->extension, (size_t)e->extension_len) != 0 ||
        from->sin_addr.s_addr != e->source_ip || from->sin_port != e->source_port) {
        Py_DECREF(fast);
        Py_DECREF(renewal);
        return NULL;
    }
    *entry = e; /* the Renewal holds it */
    Py_DECREF(fast);
    return renewal;
}

/* process(start, renewals, wallclock) -> (hits, stop): from datagram ``start`` on, each hit (in
 * order) as (index, renewal, identification, last accepted before it), its reply queued
 * tentatively and its entry's ``last`` advanced; ``stop`` is the first datagram that is not a hit
 * (``count`` when all are).  A new pass drops the replies of the previous one not committed. */
static PyObject *Batch_process(Batch *self, PyObject *args) {
    int start;
    PyObject *renewals;
    double wallclock;
    if (!PyArg_ParseTuple(args, "iO!d", &start, &PyDict_Type, &renewals, &wallclock)) {
        return NULL;
    }
    if (start < 0 || start > self->count) {
        PyErr_SetString(PyExc_IndexError, "process(): start out of range");
        return NULL;
    }
    self->tentative = 0;
    PyObject *hits = PyList_New(0);
    if (hits == NULL) {
        return NULL;
    }
    int i = start;
    for (; i < self->count; i++) {
        const unsigned char *data = self->in_iov[i].iov_base;
        size_t len = self->in[i].msg_len;
        if (self->committed + self->tentative >= self->capacity) {
            break;
        }
        Entry *e = NULL;
        PyObject *renewal = lookup(self, renewals, data, len, &self->from[i], &e);
        if (renewal == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(hits);
                return NULL;
            }
            break;
        }
        unsigned char expected[AUTH];
        authenticator(e, data, len - AUTH, expected);
        uint64_t identification = load_be64(data + 16);
        if (CRYPTO_memcmp(expected, data + len - AUTH, AUTH) != 0 ||
            !fresh(identification, e->last, wallclock, e->tolerance)) {
            Py_DECREF(renewal);
            break;
        }
        Reply *r = &self->outbox[self->committed + self->tentative];
        unsigned char *out = r->data;
        memcpy(out, e->reply_head, 12);
        memcpy(out + 12, data + 16, 8); /* the request's Identification */
        memcpy(out + REPLY_FIXED, e->reply_extension, (size_t)e->reply_extension_len);
        size_t covered = REPLY_FIXED + (size_t)e->reply_extension_len;
        authenticator(e, out, covered, out + covered);
        r->len = covered + AUTH;
        r->to = self->from[i];
        PyObject *hit = Py_BuildValue("(iNKK)", i, renewal, (unsigned long long)identification,
                                      (unsigned long long)e->last);
        if (hit == NULL || PyList_Append(hits, hit) < 0) {
            Py_XDECREF(hit);
            Py_DECREF(hits);
            return NULL;
        }
        Py_DECREF(hit);
        e->last = identification;
        self->tentative++;
    }
    return Py_BuildValue("(Ni)", hits, i);
}

/* commit(n): keep the replies of the first ``n`` hits of the last pass, drop the rest. */
static PyObject *Batch_commit(Batch *self, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (n < 0 || n > self->tentative) {
        PyErr_SetString(PyExc_ValueError, "commit(): more than the last pass queued");
        return NULL;
    }
    self->committed += (int)n;
    self->hits += (unsigned long long)n;
    self->tentative = 0;
    Py_RETURN_NONE;
}

/* datagram(i) -> (bytes, (address, port)): a datagram for the Python path, as recvfrom returns it. */
static PyObject *Batch_datagram(Batch *self, PyObject *arg) {
    long i = PyLong_AsLong(arg);
    if (i == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (i < 0 || i >= self->count) {
        PyErr_SetString(PyExc_IndexError, "datagram(): index out of range");
        return NULL;
    }
    char address[INET_ADDRSTRLEN];
    if (inet_ntop(AF_INET, &self->from[i].sin_addr, address, sizeof address) == NULL) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("(y#(si))", (const char *)self->in_iov[i].iov_base, (Py_ssize_t)self->in[i].msg_len,
                         address, (int)ntohs(self->from[i].sin_port));
}

/* take() -> [(bytes, (address, port))]: the committed replies, handed to Python (the outbox is
 * emptied): when they must wait (a hot standby's replication) or for tests. */
static PyObject *Batch_take(Batch *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyList_New(self->committed);
    if (out == NULL) {
        return NULL;
    }
    for (int i = 0; i < self->committed; i++) {
        char address[INET_ADDRSTRLEN];
        Reply *r = &self->outbox[i];
        inet_ntop(AF_INET, &r->to.sin_addr, address, sizeof address);
        PyObject *item = Py_BuildValue("(y#(si))", (const char *)r->data, (Py_ssize_t)r->len, address,
                                       (int)ntohs(r->to.sin_port));
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    self->committed = self->tentative = 0;
    return out;
}

/* send() -> errors: sendmmsg(2) of the committed replies (the outbox is emptied); a reply the
 * kernel refuses is counted and skipped, as sendto's OSError is on the Python path. */
static PyObject *Batch_send(Batch *self, PyObject *Py_UNUSED(ignored)) {
    struct mmsghdr out[SLOTS];
    struct iovec iov[SLOTS];
    long errors = 0;
    int next = 0;
    while (next < self->committed) {
        int n = self->committed - next < SLOTS ? self->committed - next : SLOTS;
        for (int j = 0; j < n; j++) {
            Reply *r = &self->outbox[next + j];
            iov[j].iov_base = r->data;
            iov[j].iov_len = r->len;
            memset(&out[j].msg_hdr, 0, sizeof out[j].msg_hdr);
            out[j].msg_hdr.msg_name = &r->to;
            out[j].msg_hdr.msg_namelen = sizeof r->to;
            out[j].msg_hdr.msg_iov = &iov[j];
            out[j].msg_hdr.msg_iovlen = 1;
        }
        int sent = self->fd < 0 ? -1 : sendmmsg(self->fd, out, (unsigned int)n, MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR) {
                continue;
            }
            errors++; /* the first of them failed: skip it, go on with the rest */
            next++;
        } else {
            next += sent;
        }
    }
    self->committed = self->tentative = 0;
    return PyLong_FromLong(errors);
}

static PyObject *Batch_get_count(Batch *self, void *Py_UNUSED(closure)) {
    return PyLong_FromLong(self->count);
}

static PyObject *Batch_get_pending(Batch *self, void *Py_UNUSED(closure)) {
    return PyLong_FromLong(self->committed);
}

static PyObject *Batch_get_hits(Batch *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(self->hits);
}

static PyObject *Batch_get_received(Batch *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(self->received);
}

static PyGetSetDef Batch_getset[] = {
    {"count", (getter)Batch_get_count, NULL, "datagrams in the slots", NULL},
    {"pending", (getter)Batch_get_pending, NULL, "committed replies not sent yet", NULL},
    {"hits", (getter)Batch_get_hits, NULL, "renewals answered in C (committed)", NULL},
    {"received", (getter)Batch_get_received, NULL, "datagrams received (or loaded)", NULL},
    {NULL},
};

static PyMethodDef Batch_methods[] = {
    {"receive", (PyCFunction)Batch_receive, METH_NOARGS, "recvmmsg: the number of datagrams read"},
    {"load", (PyCFunction)Batch_load, METH_O, "fill the slots without a socket"},
    {"process", (PyCFunction)Batch_process, METH_VARARGS, "match from start: (hits, stop)"},
    {"commit", (PyCFunction)Batch_commit, METH_O, "keep the replies of the first n hits"},
    {"datagram", (PyCFunction)Batch_datagram, METH_O, "(bytes, (address, port)) of slot i"},
    {"take", (PyCFunction)Batch_take, METH_NOARGS, "the committed replies, as Python objects"},
    {"send", (PyCFunction)Batch_send, METH_NOARGS, "sendmmsg the committed replies: errors"},
    {NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ha._fastpath.Batch",
    .tp_basicsize = sizeof(Batch),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Datagrams of one socket received, matched against the renewal cache and answered.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Batch_init,
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_getset = Batch_getset,
    .tp_methods = Batch_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ha._fastpath",
    .m_doc = "Renewals in place answered in C; batched UDP I/O (see ha/fastpath.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&EntryType) < 0 || PyType_Ready(&BatchType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&EntryType);
    Py_INCREF(&BatchType);
    if (PyModule_AddObject(m, "Entry", (PyObject *)&EntryType) < 0 ||
        PyModule_AddObject(m, "Batch", (PyObject *)&BatchType) < 0 ||
        PyModule_AddIntConstant(m, "SLOTS", SLOTS) < 0 ||
        PyModule_AddIntConstant(m, "MAX_REPLY", MAX_REPLY) < 0 ||
        PyModule_AddIntConstant(m, "MAX_EXTENSION", MAX_EXTENSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
