/* QEMU TCG plugin: executed guest instructions per ELF symbol (a flat profile,
 * the instruction-count analogue of `perf report`). Same plugin-API subset as
 * ../shared/tools/qemu-icount/icount.c, so it needs no qemu or glib headers.
 *   gcc -O2 -shared -fPIC -DAPI_VERSION=2 -o libprofile.so qemu-profile.c  (QEMU >= 9)
 * Writes "count symbol" lines, largest first, to $PROFILE_OUT (or stderr).
 * With the argument `pc=<symbol substring>` it also prints "count 0xaddr" per
 * executed instruction of the matching symbols (an annotated view with
 * objdump). Used by `scripts/icount.sh profile`. Inlined code counts under the function
 * it was inlined into; instructions without a symbol count as "?". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#ifndef API_VERSION
#define API_VERSION 1
#endif
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb; struct qemu_plugin_insn;
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*vcpu_udata_cb_t)(unsigned int, void *);
typedef void (*udata_cb_t)(qemu_plugin_id_t, void *);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb_t);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *, vcpu_udata_cb_t, int, void *);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, udata_cb_t, void *);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
const char *qemu_plugin_insn_symbol(const struct qemu_plugin_insn *);

__attribute__((visibility("default"))) int qemu_plugin_version = API_VERSION;

/* One counter per symbol; a TB may span symbols, so it gets one run record per
 * symbol change, each holding (counter, instructions). */
struct sym { char *name; _Atomic uint64_t n; struct sym *next; };
#define NB 4096
static struct sym *table[NB];
struct run { struct sym *s; uint64_t n; };
struct tbrec { size_t k; struct run r[]; };

/* Optional per-instruction counts (arg `pc=<symbol substring>`): one counter
 * per guest address of the matching symbols, printed as "count 0xaddr". */
static const char *pcfilter;
#define NPC 65536
static uint64_t pcaddr[NPC];
static _Atomic uint64_t pccount[NPC];
static size_t npc;
static void pc_exec(unsigned int vcpu, void *udata) { (void)vcpu; atomic_fetch_add_explicit(&pccount[(uintptr_t)udata], 1, memory_order_relaxed); }
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *, vcpu_udata_cb_t, int, void *);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *);
static size_t pc_slot(uint64_t a) {
    for (size_t i = 0; i < npc; i++) if (pcaddr[i] == a) return i;
    if (npc == NPC) return NPC - 1;
    pcaddr[npc] = a;
    return npc++;
}

static struct sym *lookup(const char *name) {
    unsigned h = 5381;
    for (const char *p = name; *p; p++) h = h * 33 + (unsigned char)*p;
    struct sym **b = &table[h % NB];
    for (struct sym *s = *b; s; s = s->next) if (!strcmp(s->name, name)) return s;
    struct sym *s = calloc(1, sizeof *s);
    s->name = strdup(name);
    s->next = *b;
    *b = s;
    return s;
}

static void tb_exec(unsigned int vcpu, void *udata) {
    (void)vcpu;
    struct tbrec *t = udata;
    for (size_t i = 0; i < t->k; i++) atomic_fetch_add_explicit(&t->r[i].s->n, t->r[i].n, memory_order_relaxed);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    struct tbrec *t = calloc(1, sizeof *t + n * sizeof(struct run));
    struct sym *cur = NULL;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const char *s = qemu_plugin_insn_symbol(insn);
        if (pcfilter && s && strstr(s, pcfilter))
            qemu_plugin_register_vcpu_insn_exec_cb(insn, pc_exec, 0, (void *)(uintptr_t)pc_slot(qemu_plugin_insn_vaddr(insn)));
        struct sym *y = lookup(s ? s : "?");
        if (y != cur) { t->r[t->k].s = y; t->r[t->k].n = 0; t->k++; cur = y; }
        t->r[t->k - 1].n++;
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, 0, t);
}

static int cmp(const void *a, const void *b) {
    uint64_t x = (*(struct sym *const *)a)->n, y = (*(struct sym *const *)b)->n;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void at_exit(qemu_plugin_id_t id, void *p) {
    (void)id; (void)p;
    size_t k = 0, cap = 1024;
    struct sym **all = malloc(cap * sizeof *all);
    for (int b = 0; b < NB; b++)
        for (struct sym *s = table[b]; s; s = s->next) {
            if (k == cap) all = realloc(all, (cap *= 2) * sizeof *all);
            all[k++] = s;
        }
    qsort(all, k, sizeof *all, cmp);
    const char *out = getenv("PROFILE_OUT");
    FILE *f = out ? fopen(out, "w") : stderr;
    for (size_t i = 0; i < k; i++) if (all[i]->n) fprintf(f, "%llu %s\n", (unsigned long long)all[i]->n, all[i]->name);
    for (size_t i = 0; i < npc; i++) fprintf(f, "%llu 0x%llx\n", (unsigned long long)pccount[i], (unsigned long long)pcaddr[i]);
    if (out) fclose(f);
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++)
        if (!strncmp(argv[i], "pc=", 3)) pcfilter = strdup(argv[i] + 3);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
