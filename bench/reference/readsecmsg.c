/*
 * readsecmsg: the C reference decoder of `ossec-bench decode`.
 *
 * Does per message what Wazuh's manager does in ReadSecMSG (src/os_crypto/
 * shared/msgs.c) with the libraries Wazuh uses, in the same order and with
 * the same per-message calls:
 *   - the `!ID!` prefix: the ID is cut out and compared with the agent's;
 *   - AES (`#AES:`): OS_AES_Str, i.e. EVP_CIPHER_CTX_new, EVP_DecryptInit_ex
 *     (EVP_aes_256_cbc, key = the first 32 ASCII characters of the key
 *     string, IV = the 16 ASCII characters "FEDCBA0987654321"),
 *     EVP_DecryptUpdate, EVP_DecryptFinal_ex, EVP_CIPHER_CTX_free;
 *   - Blowfish (`:`): OS_BF_Str, i.e. BF_set_key with the whole key string
 *     (47 characters) then BF_cbc_encrypt with the IV FE DC BA 98 76 54 32 10;
 *   - the `!` padding skipped, zlib `uncompress` into a 65536-byte buffer
 *     (os_zlib_uncompress);
 *   - OS_MD5_Str: EVP MD5 of everything after the first 32 bytes, printed
 *     as hex with snprintf("%02x"), compared with those 32 bytes;
 *   - the counters: 5-digit rand, 10-digit global, `:`, local, `:`, parsed
 *     with strtoul as the manager does.
 *
 * Input: a file written by `ossec-bench decode`:
 *   line 1: the agent ID, a space, the 47-character key string;
 *   then records: 4-byte little-endian length, the message as received.
 * Usage: readsecmsg FILE SECONDS MAX_MESSAGES
 * Decodes the records in passes until SECONDS of process CPU time or
 * MAX_MESSAGES messages; prints one JSON line:
 *   {"messages":N,"ok":N,"failed":N,"cpu_s":X}
 * Exits 1 when any message fails: the Rust side decodes the same messages.
 *
 * Build: cc -O2 -o readsecmsg readsecmsg.c -lcrypto -lz
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/blowfish.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define OS_MAXSTR 65536
#define KEYLEN 47

static char agent_id[64];
static char key_string[KEYLEN + 1];

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* OS_AES_Str(..., OS_DECRYPT): returns the plaintext length or -1. */
static int aes_decrypt(const unsigned char *in, int len, unsigned char *out) {
    unsigned char key[32];
    memcpy(key, key_string, 32);
    const unsigned char *iv = (const unsigned char *)"FEDCBA0987654321";
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) return -1;
    int n = 0, m = 0;
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, iv) != 1 ||
        EVP_DecryptUpdate(ctx, out, &n, in, len) != 1 ||
        EVP_DecryptFinal_ex(ctx, out + n, &m) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return -1;
    }
    EVP_CIPHER_CTX_free(ctx);
    return n + m;
}

/* OS_BF_Str(..., OS_DECRYPT). */
static int bf_decrypt(const unsigned char *in, int len, unsigned char *out) {
    BF_KEY key;
    unsigned char iv[8] = {0xFE, 0xDC, 0xBA, 0x98, 0x76, 0x54, 0x32, 0x10};
    BF_set_key(&key, (int)strlen(key_string), (const unsigned char *)key_string);
    BF_cbc_encrypt(in, out, len, &key, iv, BF_DECRYPT);
    return len;
}

/* OS_MD5_Str over `len` bytes: 32 hex characters and a NUL into `output`. */
static void md5_str(const unsigned char *s, size_t len, char output[33]) {
    unsigned char digest[16];
    unsigned int dlen = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit(c, EVP_md5());
    EVP_DigestUpdate(c, s, len);
    EVP_DigestFinal(c, digest, &dlen);
    EVP_MD_CTX_free(c);
    for (int n = 0; n < 16; n++) snprintf(output + 2 * n, 3, "%02x", digest[n]);
}

static unsigned char cleartext[OS_MAXSTR + 64];
static unsigned char inflated[OS_MAXSTR + 1];

/* ReadSecMSG: 0 when the message decodes and checks, -1 otherwise. */
static int read_sec_msg(const unsigned char *msg, size_t len, unsigned long *global,
                        unsigned long *local) {
    const unsigned char *p = msg, *end = msg + len;
    /* The `!ID!` prefix. */
    if (p < end && *p == '!') {
        const unsigned char *q = memchr(p + 1, '!', (size_t)(end - p - 1));
        if (!q || (size_t)(q - p - 1) >= sizeof agent_id) return -1;
        char id[64];
        memcpy(id, p + 1, (size_t)(q - p - 1));
        id[q - p - 1] = 0;
        if (strcmp(id, agent_id) != 0) return -1;
        p = q + 1;
    }
    int clen;
    if (end - p > 5 && memcmp(p, "#AES:", 5) == 0) {
        p += 5;
        if ((end - p) % 16 != 0 || end - p > OS_MAXSTR) return -1;
        clen = aes_decrypt(p, (int)(end - p), cleartext);
    } else if (end - p > 1 && *p == ':') {
        p += 1;
        if ((end - p) % 8 != 0 || end - p > OS_MAXSTR) return -1;
        clen = bf_decrypt(p, (int)(end - p), cleartext);
    } else {
        return -1;
    }
    if (clen <= 0 || cleartext[0] != '!') return -1;
    const unsigned char *z = cleartext;
    while (z < cleartext + clen && *z == '!') z++;
    uLongf out_len = OS_MAXSTR;
    if (uncompress(inflated, &out_len, z, (uLong)(cleartext + clen - z)) != Z_OK) return -1;
    if (out_len < 53) return -1;
    inflated[out_len] = 0;
    char sum[33];
    md5_str(inflated + 32, out_len - 32, sum);
    if (strncmp(sum, (const char *)inflated, 32) != 0) return -1;
    /* RRRRRGGGGGGGGGG:LLLL: */
    char *f = (char *)inflated + 32 + 5, *tail;
    *global = strtoul(f, &tail, 10);
    if (*tail != ':') return -1;
    *local = strtoul(tail + 1, &tail, 10);
    if (*tail != ':') return -1;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s FILE SECONDS MAX_MESSAGES\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    if (fscanf(f, "%63s %47s", agent_id, key_string) != 2 || strlen(key_string) != KEYLEN ||
        fgetc(f) != '\n') {
        fprintf(stderr, "%s: first line is not `ID KEY47`\n", argv[1]);
        return 2;
    }
    size_t cap = 1024, count = 0;
    unsigned char **msgs = malloc(cap * sizeof *msgs);
    size_t *lens = malloc(cap * sizeof *lens);
    unsigned char lb[4];
    while (fread(lb, 1, 4, f) == 4) {
        size_t n = (size_t)lb[0] | (size_t)lb[1] << 8 | (size_t)lb[2] << 16 | (size_t)lb[3] << 24;
        if (n > OS_MAXSTR) {
            fprintf(stderr, "%s: record of %zu bytes\n", argv[1], n);
            return 2;
        }
        if (count == cap) {
            cap *= 2;
            msgs = realloc(msgs, cap * sizeof *msgs);
            lens = realloc(lens, cap * sizeof *lens);
        }
        msgs[count] = malloc(n ? n : 1);
        if (fread(msgs[count], 1, n, f) != n) {
            fprintf(stderr, "%s: truncated record\n", argv[1]);
            return 2;
        }
        lens[count++] = n;
    }
    fclose(f);
    if (count == 0) {
        fprintf(stderr, "%s: no messages\n", argv[1]);
        return 2;
    }
    double seconds = atof(argv[2]);
    unsigned long long max = strtoull(argv[3], NULL, 10), done = 0, ok = 0, failed = 0;
    unsigned long sink = 0;
    double start = cpu_now(), now = start;
    while (done < max && now - start < seconds) {
        for (size_t i = 0; i < count && done < max; i++, done++) {
            unsigned long g = 0, l = 0;
            if (read_sec_msg(msgs[i], lens[i], &g, &l) == 0) {
                ok++;
                sink += g + l;
            } else {
                failed++;
            }
        }
        now = cpu_now();
    }
    printf("{\"messages\":%llu,\"ok\":%llu,\"failed\":%llu,\"cpu_s\":%.6f,\"sink\":%lu}\n", done,
           ok, failed, now - start, sink);
    return failed ? 1 : 0;
}
