/* .npy files carry the shape and dtype, so the controller can reject a wrong input by itself.
 * Every number in a file is untrusted: see npy.h for the bounds. */
#include "npy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
  const char *descr, *name;
  size_t size;
} DTYPES[NPY_NUM_DTYPES] = {
  [NPY_F32] = {"<f4", "float32", 4}, [NPY_F64] = {"<f8", "float64", 8}, [NPY_F16] = {"<f2", "float16", 2},
  [NPY_I64] = {"<i8", "int64", 8},   [NPY_I32] = {"<i4", "int32", 4},   [NPY_I16] = {"<i2", "int16", 2},
  [NPY_I8] = {"|i1", "int8", 1},     [NPY_U8] = {"|u1", "uint8", 1},    [NPY_BOOL] = {"|b1", "bool", 1},
  [NPY_U16] = {"<u2", "uint16", 2},  [NPY_U32] = {"<u4", "uint32", 4},  [NPY_U64] = {"<u8", "uint64", 8},
};

const char *npy_descr(int dtype) { return dtype >= 0 && dtype < NPY_NUM_DTYPES ? DTYPES[dtype].descr : NULL; }
size_t npy_elem_size(int dtype) { return dtype >= 0 && dtype < NPY_NUM_DTYPES ? DTYPES[dtype].size : 0; }
const char *npy_dtype_name(int dtype) { return dtype >= 0 && dtype < NPY_NUM_DTYPES ? DTYPES[dtype].name : "?"; }

static int fail(char *err, int errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (err && errlen > 0) vsnprintf(err, (size_t)errlen, fmt, ap);
  va_end(ap);
  return -1;
}

/* --- header: a Python dict literal, as numpy's safe_eval reads it (a strict subset of Python) --- */

typedef struct {
  const char *s;
  size_t n, at;
} cursor;

static int peek(const cursor *c) { return c->at < c->n ? (unsigned char)c->s[c->at] : -1; }

static void skip_ws(cursor *c) {
  while (c->at < c->n && strchr(" \t\n\r\f", c->s[c->at]) && c->s[c->at]) c->at++;
}

/* A quoted string without escapes (numpy never writes any) into buf; -1 if malformed or too long. */
static int parse_string(cursor *c, char *buf, size_t cap) {
  int q = peek(c);
  if (q != '\'' && q != '"') return -1;
  size_t start = ++c->at;
  while (c->at < c->n && c->s[c->at] != q) {
    unsigned char ch = (unsigned char)c->s[c->at];
    if (ch == '\\' || ch == '\n' || ch == '\r' || ch < 0x20 || ch >= 0x7f) return -1;
    c->at++;
  }
  if (c->at >= c->n) return -1;
  size_t len = c->at - start;
  c->at++;  /* closing quote */
  if (len + 1 > cap) return -1;
  memcpy(buf, c->s + start, len);
  buf[len] = 0;
  return 0;
}

static int is_ident(int ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch >= 0x80;
}

static int parse_word(cursor *c, const char *word) {
  size_t len = strlen(word);
  if (c->n - c->at < len || memcmp(c->s + c->at, word, len) != 0) return -1;
  if (c->at + len < c->n && is_ident((unsigned char)c->s[c->at + len])) return -1;
  c->at += len;
  return 0;
}

/* A Python int literal with an optional sign: 0, 00, or [1-9][0-9]*. */
static int parse_int(cursor *c, int64_t *value, const char **why) {
  int negative = 0;
  if (peek(c) == '-' || peek(c) == '+') {
    negative = peek(c) == '-';
    c->at++;
    skip_ws(c);
  }
  int ch = peek(c);
  if (ch < '0' || ch > '9') { *why = "a shape entry is not an integer"; return -1; }
  size_t start = c->at;
  uint64_t v = 0;
  int big = 0;
  while ((ch = peek(c)) >= '0' && ch <= '9') {
    if (v > ((uint64_t)INT64_MAX - (uint64_t)(ch - '0')) / 10) big = 1;  /* beyond int64, as numpy's intp */
    else v = v * 10 + (uint64_t)(ch - '0');
    c->at++;
  }
  if (c->s[start] == '0') {  /* Python: leading zeros only in "0", "00", ... */
    for (size_t i = start; i < c->at; i++)
      if (c->s[i] != '0') { *why = "a shape entry is not an integer"; return -1; }
  }
  if (is_ident(peek(c)) || peek(c) == '.') { *why = "a shape entry is not an integer"; return -1; }
  if (negative && (v || big)) { *why = "negative dimension in shape"; return -1; }
  if (big) { *why = "a dimension is too large"; return -1; }
  *value = (int64_t)v;
  return 0;
}

static int parse_shape(cursor *c, npy_array *out, const char **why) {
  *why = "'shape' is not a tuple of integers";
  if (peek(c) != '(') return -1;
  c->at++;
  skip_ws(c);
  int trailing_comma = 0;
  out->rank = 0;
  while (peek(c) != ')') {
    if (out->rank == NPY_MAX_RANK) { *why = "rank above 16"; return -1; }
    int64_t v;
    if (parse_int(c, &v, why)) return -1;
    out->shape[out->rank++] = v;
    skip_ws(c);
    trailing_comma = 0;
    if (peek(c) == ',') {
      c->at++;
      skip_ws(c);
      trailing_comma = 1;
    } else if (peek(c) != ')') {
      *why = "'shape' is not a tuple of integers";
      return -1;
    }
  }
  c->at++;
  if (out->rank == 1 && !trailing_comma) return -1;  /* "(3)" is an int, not a tuple */
  return 0;
}

int npy_parse_header(const char *text, size_t len, npy_array *out, char *err, int errlen) {
  memset(out, 0, sizeof *out);
  out->dtype = -1;
  cursor c = {text, len, 0};
  int seen_descr = 0, seen_order = 0, seen_shape = 0;
  const char *why = "header is not a dict literal";
  skip_ws(&c);
  if (peek(&c) != '{') return fail(err, errlen, "%s", why);
  c.at++;
  for (;;) {
    skip_ws(&c);
    if (peek(&c) == '}') break;
    char key[32], value[32];
    if (parse_string(&c, key, sizeof key)) return fail(err, errlen, "header: malformed key");
    skip_ws(&c);
    if (peek(&c) != ':') return fail(err, errlen, "%s", why);
    c.at++;
    skip_ws(&c);
    if (!strcmp(key, "descr")) {
      seen_descr = 1;  /* a repeated key: the last one counts, as in a Python dict */
      out->dtype = -1;
      if (parse_string(&c, value, sizeof value)) return fail(err, errlen, "header: 'descr' is not a plain dtype string");
      for (int d = 0; d < NPY_NUM_DTYPES; d++)
        if (!strcmp(value, DTYPES[d].descr)) out->dtype = d;
      if (out->dtype < 0)
        return fail(err, errlen, "unsupported dtype '%s' (supported: little-endian float16/32/64, int8-64, uint8-64, bool)", value);
    } else if (!strcmp(key, "fortran_order")) {
      seen_order = 1;
      if (!parse_word(&c, "True"))
        return fail(err, errlen, "Fortran-order arrays are not supported (save with np.save(path, np.ascontiguousarray(a)))");
      if (parse_word(&c, "False")) return fail(err, errlen, "header: 'fortran_order' is not True or False");
    } else if (!strcmp(key, "shape")) {
      seen_shape = 1;
      if (parse_shape(&c, out, &why)) return fail(err, errlen, "header: %s", why);
    } else {
      return fail(err, errlen, "header: unexpected key '%s'", key);
    }
    skip_ws(&c);
    if (peek(&c) == ',') { c.at++; continue; }
    if (peek(&c) == '}') break;
    return fail(err, errlen, "header is not a dict literal");
  }
  c.at++;
  skip_ws(&c);
  if (c.at != c.n) return fail(err, errlen, "header: text after the dict");
  if (!seen_descr || !seen_order || !seen_shape) return fail(err, errlen, "header lacks 'descr', 'fortran_order' or 'shape'");
  /* As numpy: the nonzero dimensions times the element size must fit an int64, even when another
     dimension is 0. */
  int64_t count = 1, nbytes = (int64_t)DTYPES[out->dtype].size;
  int empty = 0;
  for (int i = 0; i < out->rank; i++) {
    if (out->shape[i] == 0) { empty = 1; continue; }
    if (__builtin_mul_overflow(count, out->shape[i], &count) || __builtin_mul_overflow(nbytes, out->shape[i], &nbytes))
      return fail(err, errlen, "shape too large");
  }
  out->count = empty ? 0 : (size_t)count;
  out->nbytes = empty ? 0 : (size_t)nbytes;
  return 0;
}

int npy_read(const char *path, npy_array *out, size_t max_bytes, char *err, int errlen) {
  memset(out, 0, sizeof *out);
  char why[200];
  FILE *f = fopen(path, "rb");
  if (!f) return fail(err, errlen, "%s: cannot open", path);
  unsigned char magic[8];
  char *header = NULL;
  if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "\x93NUMPY", 6) != 0) {
    snprintf(why, sizeof why, "not a .npy file");
    goto bad;
  }
  if (magic[6] < 1 || magic[6] > 3 || magic[7] != 0) {
    snprintf(why, sizeof why, "unsupported .npy format version %d.%d", magic[6], magic[7]);
    goto bad;
  }
  unsigned char b[4] = {0};
  size_t width = magic[6] == 1 ? 2 : 4;
  if (fread(b, 1, width, f) != width) {
    snprintf(why, sizeof why, "truncated header");
    goto bad;
  }
  uint32_t hlen = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
  if (hlen > NPY_MAX_HEADER) {
    snprintf(why, sizeof why, "header of %u bytes (at most %d)", hlen, NPY_MAX_HEADER);
    goto bad;
  }
  header = malloc(hlen ? hlen : 1);
  if (!header) {
    snprintf(why, sizeof why, "out of memory");
    goto bad;
  }
  if (fread(header, 1, hlen, f) != hlen) {
    snprintf(why, sizeof why, "truncated header");
    goto bad;
  }
  if (npy_parse_header(header, hlen, out, why, sizeof why)) goto bad;
  free(header);
  header = NULL;
  if (out->nbytes > max_bytes) {  /* -2: the header (rank, shape, dtype) is valid for the caller's message */
    fclose(f);
    fail(err, errlen, "%s: holds %zu bytes of data, more than the %zu expected", path, out->nbytes, max_bytes);
    return -2;
  }
  out->data = malloc(out->nbytes ? out->nbytes : 1);
  if (!out->data) {
    snprintf(why, sizeof why, "out of memory for %zu bytes", out->nbytes);
    goto bad;
  }
  if (fread(out->data, 1, out->nbytes, f) != out->nbytes) {
    free(out->data);
    out->data = NULL;
    snprintf(why, sizeof why, "truncated data");
    goto bad;
  }
  fclose(f);
  return 0;
bad:
  free(header);
  fclose(f);
  return fail(err, errlen, "%s: %s", path, why);
}

/* Appends to a buffer of known capacity; -1 if it would not fit. */
static int append(char *buf, size_t cap, size_t *n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(buf + *n, cap - *n, fmt, ap);
  va_end(ap);
  if (k < 0 || (size_t)k >= cap - *n) return -1;
  *n += (size_t)k;
  return 0;
}

int npy_write(const char *path, const void *data, int dtype, const int64_t *shape, int rank) {
  if (!npy_descr(dtype) || rank < 0 || rank > NPY_MAX_RANK) return -1;
  size_t count = 1;
  for (int i = 0; i < rank; i++)
    if (shape[i] < 0 || __builtin_mul_overflow(count, (size_t)shape[i], &count)) return -1;
  size_t nbytes;
  if (__builtin_mul_overflow(count, npy_elem_size(dtype), &nbytes)) return -1;
  /* 64 bytes of fixed text, at most 22 per dimension, 64 of padding, the newline. */
  size_t cap = 64 + 22 * (size_t)rank + 64 + 2, n = 0;
  char *header = malloc(cap);
  if (!header) return -1;
  int bad = append(header, cap, &n, "{'descr': '%s', 'fortran_order': False, 'shape': (", npy_descr(dtype));
  for (int i = 0; i < rank && !bad; i++)
    bad = append(header, cap, &n, i + 1 < rank ? "%lld, " : rank == 1 ? "%lld," : "%lld", (long long)shape[i]);
  if (!bad) bad = append(header, cap, &n, "), }");
  while (!bad && (10 + n + 1) % 64) bad = append(header, cap, &n, " ");  /* magic 6 + version 2 + length 2 */
  if (!bad) bad = append(header, cap, &n, "\n");
  FILE *f = bad ? NULL : fopen(path, "wb");
  if (!f) {
    free(header);
    return -1;
  }
  unsigned char prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff), (unsigned char)(n >> 8)};
  int ok = fwrite(prefix, 1, 10, f) == 10 && fwrite(header, 1, n, f) == n && fwrite(data, 1, nbytes, f) == nbytes;
  free(header);
  return fclose(f) == 0 && ok ? 0 : -1;
}
