/* EXPLAIN QUERY PLAN with the very SQLite the server is linked with (libsqlite3-sys's bundled
 * build, found in the cargo target directory by bench/deletion_preview.py).
 * Usage: eqp DBFILE < statements separated by NUL bytes.
 * Prints "#STMT n" before each statement's plan, then one "id|parent|detail" line per row. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sqlite3.h"

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: eqp DBFILE < statements\n"); return 2; }
    sqlite3 *db;
    if (sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, "cannot open %s: %s\n", argv[1], sqlite3_errmsg(db)); return 1;
    }
    size_t cap = 1 << 16, len = 0; char *buf = malloc(cap); int c;
    while ((c = getchar()) != EOF) {
        if (len + 2 >= cap) { cap *= 2; buf = realloc(buf, cap); }
        buf[len++] = (char)c;
    }
    buf[len] = 0;
    printf("#VERSION %s\n", sqlite3_libversion());
    int n = 0;
    for (char *p = buf; p < buf + len; p += strlen(p) + 1) {
        if (!*p) continue;
        char *sql = sqlite3_mprintf("EXPLAIN QUERY PLAN %s", p);
        sqlite3_stmt *st;
        printf("#STMT %d\n", n++);
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
            printf("#ERROR %s\n", sqlite3_errmsg(db)); sqlite3_free(sql); continue;
        }
        while (sqlite3_step(st) == SQLITE_ROW)
            printf("%d|%d|%s\n", sqlite3_column_int(st, 0), sqlite3_column_int(st, 1),
                   (const char *)sqlite3_column_text(st, 3));
        sqlite3_finalize(st); sqlite3_free(sql);
    }
    sqlite3_close(db);
    return 0;
}
