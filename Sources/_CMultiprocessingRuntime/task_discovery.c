#define _GNU_SOURCE
#include "_CMultiprocessingRuntime.h"

#include <elf.h>
#include <errno.h>
#include <link.h>
#include <stdbool.h>
#include <string.h>

// ----------------------------------------------------------- named tasks --
//
// The Swift runtime keeps, per loaded image, the ranges of its metadata
// sections; `swift_enumerateAllMetadataSections` walks them. Each entry of
// `swift5_protocol_conformances` is a relative pointer to a conformance
// descriptor; the layouts below are the Swift ABI's (swift/ABI/Metadata.h):
// relative pointers are 32-bit offsets from their own address, and an
// "indirectable" one with its low bit set points at a pointer.

typedef struct { uintptr_t start; size_t length; } cmp_section_range;
typedef struct {
    uintptr_t version;
    const void *base_address;
    void *unused0, *unused1;
    cmp_section_range protocols;
    cmp_section_range protocol_conformances;
} cmp_metadata_sections_prefix;

// Weak: a runtime without it leaves the pointer null and discovery reports so.
extern void swift_enumerateAllMetadataSections(bool (*body)(const cmp_metadata_sections_prefix *, void *), void *context)
    __attribute__((weak));

// The witness table of a conformance for a type (swift/Runtime/Metadata.h);
// weak like the walk above, so a runtime without it gives the caller a null
// table and the caller asks the runtime's dynamic cast instead.
extern const void *swift_getWitnessTable(const void *conformance, const void *type, const void *const *instantiation_args)
    __attribute__((weak));

typedef struct { const void *metadata; uintptr_t state; } cmp_metadata_response;
typedef cmp_metadata_response (*cmp_metadata_accessor)(uintptr_t request) __attribute__((swiftcall));

static const void *relative_direct(const int32_t *field) {
    if (*field == 0) return NULL;
    return (const char *)field + *field;
}

static const void *relative_indirectable(const int32_t *field) {
    int32_t offset = *field;
    if (offset == 0) return NULL;
    const char *target = (const char *)field + (offset & ~1);
    return (offset & 1) ? *(const void *const *)target : target;
}

// A context descriptor: flags, parent, name (the first three fields of every kind).
typedef struct { uint32_t flags; int32_t parent; int32_t name; } cmp_context;

static const char *context_name(const cmp_context *context) { return context ? relative_direct(&context->name) : NULL; }
static const cmp_context *context_parent(const cmp_context *context) { return context ? relative_indirectable(&context->parent) : NULL; }

// Which protocol a descriptor is: MP.NamedTask, MP.ManagedObject (the types a
// manager serves by name), or neither (-1). The two descriptors are found by
// name once; after that a record is matched by comparing one pointer, so the
// walk reads no other protocol's descriptor.
static const cmp_context *known_protocols[2];

static int found_protocol_by_name(const cmp_context *protocol) {
    if (!protocol || (protocol->flags & 0x1F) != 3) return -1;
    const char *name = context_name(protocol);
    if (!name) return -1;
    int which = strcmp(name, "NamedTask") == 0 ? 0 : strcmp(name, "ManagedObject") == 0 ? 1 : -1;
    if (which < 0) return -1;
    const cmp_context *mp = context_parent(protocol);
    const char *mp_name = context_name(mp);
    if (!mp_name || strcmp(mp_name, "MP") != 0) return -1;
    const cmp_context *module = context_parent(mp);
    const char *module_name = context_name(module);
    if (!(module && (module->flags & 0x1F) == 0 && module_name && strcmp(module_name, "Multiprocessing") == 0)) return -1;
    return which;
}

static int found_protocol(const cmp_context *protocol) {
    if (!protocol) return -1;
    if (protocol == known_protocols[0]) return 0;
    if (protocol == known_protocols[1]) return 1;
    if (known_protocols[0] && known_protocols[1]) return -1;
    int which = found_protocol_by_name(protocol);
    if (which >= 0) known_protocols[which] = protocol;
    return which;
}

typedef struct {
    void (*found)(const void *metadata, const void *witness_table, cmp_found_protocol protocol, void *context);
    void (*skipped)(const char *type_name, void *context);
    void *context;
} cmp_discovery;

static bool visit_image(const cmp_metadata_sections_prefix *sections, void *opaque) {
    cmp_discovery *discovery = opaque;
    const int32_t *records = (const int32_t *)sections->protocol_conformances.start;
    size_t count = sections->protocol_conformances.length / sizeof(int32_t);
    for (size_t i = 0; i < count; i++) {
        const int32_t *conformance = relative_direct(&records[i]);
        if (!conformance) continue;
        int which = found_protocol(relative_indirectable(&conformance[0]));
        if (which < 0) continue;
        uint32_t flags = (uint32_t)conformance[3];
        unsigned kind = (flags >> 3) & 7;
        const cmp_context *type = NULL;
        if (kind == 0) type = relative_direct(&conformance[1]);
        else if (kind == 1) { const void *const *slot = relative_direct(&conformance[1]); type = slot ? *slot : NULL; }
        if (!type) continue; // an Objective-C class: not on Linux
        unsigned type_kind = type->flags & 0x1F;
        if (type_kind < 16 || type_kind > 31) continue;
        if (type->flags & 0x80) { // generic: no metadata without its arguments
            if (discovery->skipped) discovery->skipped(context_name(type), discovery->context);
            continue;
        }
        const int32_t *access_field = (const int32_t *)((const char *)type + sizeof(cmp_context));
        cmp_metadata_accessor access = (cmp_metadata_accessor)relative_direct(access_field);
        if (!access) continue;
        const void *metadata = access(0).metadata;
        const void *table = swift_getWitnessTable ? swift_getWitnessTable(conformance, metadata, NULL) : NULL;
        discovery->found(metadata, table, (cmp_found_protocol)which, discovery->context);
    }
    return true;
}

int cmp_discover_named_tasks(void (*found)(const void *, const void *, cmp_found_protocol, void *),
                             void (*skipped)(const char *, void *), void *context) {
    if (!swift_enumerateAllMetadataSections) { errno = ENOTSUP; return -1; }
    cmp_discovery discovery = {found, skipped, context};
    swift_enumerateAllMetadataSections(visit_image, &discovery);
    return 0;
}

// -------------------------------------------------------- build identity --

typedef struct { uint8_t *out; size_t capacity; size_t length; } cmp_build_id_search;

static int find_build_id(struct dl_phdr_info *info, size_t size, void *opaque) {
    (void)size;
    cmp_build_id_search *search = opaque;
    // The first object is the executable itself.
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *header = &info->dlpi_phdr[i];
        if (header->p_type != PT_NOTE) continue;
        const char *note = (const char *)(info->dlpi_addr + header->p_vaddr);
        const char *end = note + header->p_memsz;
        while (note + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nhdr = (const ElfW(Nhdr) *)note;
            const char *name = note + sizeof(ElfW(Nhdr));
            const char *desc = name + ((nhdr->n_namesz + 3) & ~3u);
            if (nhdr->n_type == NT_GNU_BUILD_ID && nhdr->n_namesz == 4 && memcmp(name, "GNU", 4) == 0) {
                size_t n = nhdr->n_descsz < search->capacity ? nhdr->n_descsz : search->capacity;
                memcpy(search->out, desc, n);
                search->length = n;
                return 1;
            }
            note = desc + ((nhdr->n_descsz + 3) & ~3u);
        }
    }
    return 1; // only the executable
}

size_t cmp_executable_build_id(uint8_t *out, size_t capacity) {
    cmp_build_id_search search = {out, capacity, 0};
    dl_iterate_phdr(find_build_id, &search);
    return search.length;
}
