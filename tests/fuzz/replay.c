/*  replay.c - runs a fuzz target's LLVMFuzzerTestOneInput on files, for builds without
    libFuzzer: ctest replays the committed corpus (tests/fuzz/corpus/) this way, so every
    input the fuzzers ever kept, crashers included, is run on every build, sanitizers too.
    Usage: <target> FILE|DIR...; exits 1 when a path cannot be read or holds no input.      */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int s_run_file(const char *path)
{
    FILE *file = fopen(path, "rb");
    if (!file) {
        perror(path);
        return -1;
    }
    uint8_t *data = NULL;
    size_t size = 0, capacity = 0;
    for (;;) {
        if (size == capacity) {
            capacity = capacity ? 2 * capacity : 4096;
            uint8_t *grown = realloc(data, capacity);
            if (!grown) {
                free(data);
                fclose(file);
                fprintf(stderr, "%s: out of memory\n", path);
                return -1;
            }
            data = grown;
        }
        size_t got = fread(data + size, 1, capacity - size, file);
        size += got;
        if (got == 0) {
            break;
        }
    }
    int failed = ferror(file);
    fclose(file);
    if (failed) {
        free(data);
        fprintf(stderr, "%s: read error\n", path);
        return -1;
    }
    LLVMFuzzerTestOneInput(data, size);
    free(data);
    return 1;
}

static int s_compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/*  Returns the inputs run, or -1 on an unreadable path.                                       */
static int s_run_path(const char *path)
{
    struct stat info;
    if (stat(path, &info) != 0) {
        perror(path);
        return -1;
    }
    if (!S_ISDIR(info.st_mode)) {
        return s_run_file(path);
    }
    DIR *dir = opendir(path);
    if (!dir) {
        perror(path);
        return -1;
    }
    char **names = NULL;
    size_t count = 0;
    int result = 0;
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;) {
        if (entry->d_name[0] == '.') {
            continue;
        }
        char **grown = realloc(names, (count + 1) * sizeof *names);
        if (!grown) {
            result = -1;
            break;
        }
        names = grown;
        size_t length = strlen(path) + strlen(entry->d_name) + 2;
        char *name = malloc(length);
        if (!name) {
            result = -1;
            break;
        }
        snprintf(name, length, "%s/%s", path, entry->d_name);
        names[count++] = name;
    }
    closedir(dir);
    qsort(names, count, sizeof *names, s_compare_names);
    for (size_t index = 0; index < count; index++) {
        if (result >= 0) {
            int ran = s_run_path(names[index]);
            result = ran < 0 ? -1 : result + ran;
        }
        free(names[index]);
    }
    free(names);
    return result;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    int total = 0;
    for (int index = 1; index < argc; index++) {
        int ran = s_run_path(argv[index]);
        if (ran <= 0) {
            fprintf(stderr, "%s: %s\n", argv[index], ran < 0 ? "unreadable" : "no input");
            return 1;
        }
        total += ran;
    }
    printf("%d inputs replayed\n", total);
    return 0;
}
