/*
 * fleetca.c - the native custom actions of Fleet's Orbit MSI (they replace PowerShell ones).
 *
 * Built by build.sh into fleetca-x64.dll (the x64 MSI) and fleetca-x86.dll (the arm64 MSI:
 * Windows on ARM runs x86 custom actions under emulation). All four actions are deferred,
 * rollback or commit actions, so their only input is the CustomActionData property:
 *
 *   WriteSecret      "<root>|<secret>"  root = Orbit's directory, e.g. "C:\Program Files\Orbit\"
 *   RollbackSecret   "<root>"           rollback action, scheduled just before WriteSecret
 *   CommitSecret     "<root>"           commit action
 *   RemoveOrbitRoot  "<root>"           uninstall, after RemoveFiles, before InstallFinalize
 *
 * A root may come with or without its trailing backslash. Everything up to the first '|' is
 * the root (a Windows path cannot contain '|'); the secret is the rest, '|' and all.
 *
 * No C library: this links kernel32, advapi32 and msi only, so the DLL runs in any custom
 * action server without a CRT, and its bytes depend on the toolchain alone (see BUILDINFO).
 * Nothing here logs the secret, nor the CustomActionData that carries it (only its root).
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <msi.h>
#include <msiquery.h>
#include <sddl.h>

#define EXPORT __declspec(dllexport)

/* Files of WriteSecret's transaction, all next to secret.txt. */
#define SECRET L"secret.txt"
#define SECRET_NEW L"secret.txt.new"       /* being written; never readable by Users */
#define SECRET_BAK L"secret.txt.bak"       /* the previous secret.txt, until commit */
#define SECRET_ABSENT L"secret.txt.absent" /* marker: there was no secret.txt, until commit */

/* SYSTEM and Administrators only, not inherited from the directory ("P": protected). */
#define SECRET_SDDL L"D:P(A;;FA;;;SY)(A;;FA;;;BA)"

#define REMOVE_RETRY_MS 10000 /* RemoveOrbitRoot waits this long, in all, for busy files */
#define REMOVE_MAX_DEPTH 128  /* deeper trees are left in place (Orbit's is about 8 deep) */

/* gcc may turn struct initialisation and copies into calls to these even when freestanding. */
void *__cdecl memset(void *dst, int c, size_t n)
{
    volatile BYTE *d = dst; /* volatile: keep gcc from compiling this loop into memset() */
    while (n--)
        *d++ = (BYTE)c;
    return dst;
}

void *__cdecl memcpy(void *__restrict__ dst, const void *__restrict__ src, size_t n)
{
    volatile BYTE *d = dst;
    const BYTE *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)instance;
    (void)reason;
    (void)reserved;
    return TRUE;
}

/* ---- memory and strings ---------------------------------------------------------------- */

static void *alloc(SIZE_T bytes)
{
    return HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, bytes);
}

/* Frees p after zeroing its `bytes` first bytes (pass 0 when it held nothing secret). */
static void release(void *p, SIZE_T bytes)
{
    if (p == NULL)
        return;
    SecureZeroMemory(p, bytes);
    HeapFree(GetProcessHeap(), 0, p);
}

static SIZE_T wlen(const WCHAR *s)
{
    SIZE_T n = 0;
    while (s[n])
        n++;
    return n;
}

static BOOL wequal(const WCHAR *a, const WCHAR *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

/* A new string: a + b + c (any may be NULL), or NULL when out of memory. */
static WCHAR *wconcat(const WCHAR *a, const WCHAR *b, const WCHAR *c)
{
    const WCHAR *parts[3] = {a, b, c};
    SIZE_T n = 0, i, k;
    WCHAR *out, *p;
    for (i = 0; i < 3; i++)
        n += parts[i] ? wlen(parts[i]) : 0;
    out = alloc((n + 1) * sizeof(WCHAR));
    if (out == NULL)
        return NULL;
    for (p = out, i = 0; i < 3; i++)
        for (k = 0; parts[i] && parts[i][k]; k++)
            *p++ = parts[i][k];
    return out;
}

/* ---- logging: a line in the MSI log (msiexec /l*v) --------------------------------------- */

/* Logs "fleetca <what>[ <path>][ (error <err>)]"; err 0 means none. */
static void log_line(MSIHANDLE install, const WCHAR *what, const WCHAR *path, DWORD err)
{
    static const WCHAR prefix[] = L" (error ";
    WCHAR suffix[24], *p = suffix + 23; /* " (error 4294967295)", written right to left */
    WCHAR *head, *line;
    MSIHANDLE record;

    *p = 0;
    if (err != 0) {
        *--p = L')';
        do
            *--p = (WCHAR)(L'0' + err % 10);
        while (err /= 10);
        for (SIZE_T i = wlen(prefix); i > 0; i--)
            *--p = prefix[i - 1];
    }
    head = wconcat(L"fleetca ", what, path ? L" " : NULL);
    line = head ? wconcat(head, path, p) : NULL;
    release(head, 0);
    if (line == NULL)
        return;
    record = MsiCreateRecord(1);
    if (record) {
        /* Field 0 is a template; the text goes in field 1 so that '[' in a path stays as is. */
        MsiRecordSetStringW(record, 0, L"[1]");
        MsiRecordSetStringW(record, 1, line);
        MsiProcessMessage(install, INSTALLMESSAGE_INFO, record);
        MsiCloseHandle(record);
    }
    release(line, 0);
}

/* ---- CustomActionData ------------------------------------------------------------------- */

/*
 * The CustomActionData property as a new string (*bytes = its allocation, for release()), or
 * NULL. MsiGetPropertyW reports ERROR_MORE_DATA and the length without the terminator when the
 * buffer is short, so ask for the length first and retry until it fits.
 */
static WCHAR *get_action_data(MSIHANDLE install, SIZE_T *bytes)
{
    WCHAR empty[1] = {0};
    DWORD cch = 0;
    UINT rc = MsiGetPropertyW(install, L"CustomActionData", empty, &cch);
    for (;;) {
        WCHAR *buf;
        DWORD size;
        if (rc != ERROR_SUCCESS && rc != ERROR_MORE_DATA)
            return NULL;
        size = cch + 1;
        *bytes = (SIZE_T)size * sizeof(WCHAR);
        buf = alloc(*bytes);
        if (buf == NULL)
            return NULL;
        cch = size;
        rc = MsiGetPropertyW(install, L"CustomActionData", buf, &cch);
        if (rc == ERROR_SUCCESS)
            return buf;
        release(buf, *bytes); /* grew in between (it cannot, but the API allows it) */
    }
}

/*
 * Splits data at its first '|' (ending the root there) and returns the rest (NULL when there
 * is no '|'). Returns the root as a new string with exactly one trailing backslash in *root.
 */
static WCHAR *split_root(WCHAR *data, WCHAR **root)
{
    WCHAR *rest = NULL, *p;
    SIZE_T n;
    for (p = data; *p; p++)
        if (*p == L'|') {
            *p = 0;
            rest = p + 1;
            break;
        }
    n = wlen(data);
    while (n > 0 && data[n - 1] == L'\\')
        n--;
    *root = alloc((n + 2) * sizeof(WCHAR));
    if (*root) {
        memcpy(*root, data, n * sizeof(WCHAR));
        (*root)[n] = L'\\';
    }
    return rest;
}

/* "X:\..." (drive letter, colon, backslash). UNC and \\?\ paths are not Orbit's root. */
static BOOL is_drive_path(const WCHAR *p)
{
    WCHAR d = p[0] | 0x20; /* ASCII lower case */
    return d >= L'a' && d <= L'z' && p[1] == L':' && p[2] == L'\\';
}

/* ---- files ------------------------------------------------------------------------------- */

/* Whether path exists; an error other than "not found" counts as yes, so that the caller
   tries to use the file and reports what goes wrong rather than overwriting it. */
static BOOL exists(const WCHAR *path)
{
    DWORD err;
    if (GetFileAttributesW(path) != INVALID_FILE_ATTRIBUTES)
        return TRUE;
    err = GetLastError();
    return err != ERROR_FILE_NOT_FOUND && err != ERROR_PATH_NOT_FOUND;
}

/* Deletes a file (a read-only one too); a missing file is fine. Returns a Win32 error. */
static DWORD delete_file(const WCHAR *path)
{
    DWORD err, attrs;
    if (DeleteFileW(path))
        return ERROR_SUCCESS;
    err = GetLastError();
    if (err == ERROR_FILE_NOT_FOUND || err == ERROR_PATH_NOT_FOUND)
        return ERROR_SUCCESS;
    /* A read-only file refuses deletion until the attribute is cleared. */
    attrs = GetFileAttributesW(path);
    if (err == ERROR_ACCESS_DENIED && attrs != INVALID_FILE_ATTRIBUTES &&
        (attrs & FILE_ATTRIBUTE_READONLY) && !(attrs & FILE_ATTRIBUTE_REPARSE_POINT) &&
        SetFileAttributesW(path, attrs & ~FILE_ATTRIBUTE_READONLY)) {
        if (DeleteFileW(path))
            return ERROR_SUCCESS;
        err = GetLastError();
    }
    return err;
}

/* Renames from over to (replacing it), durably. Returns a Win32 error. */
static DWORD move_over(const WCHAR *from, const WCHAR *to)
{
    if (MoveFileExW(from, to, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH))
        return ERROR_SUCCESS;
    return GetLastError();
}

/* Creates path (it must not exist) readable by SYSTEM and Administrators only, with data. */
static DWORD write_private_file(const WCHAR *path, const char *data, DWORD size)
{
    SECURITY_ATTRIBUTES sa = {sizeof(sa), NULL, FALSE};
    PSECURITY_DESCRIPTOR sd = NULL;
    HANDLE file;
    DWORD err = ERROR_SUCCESS, done = 0, n;

    /* The DACL is set when the file is created, so there is no moment when Users can open
       it; renames keep it, so secret.txt gets it too. */
    if (!ConvertStringSecurityDescriptorToSecurityDescriptorW(SECRET_SDDL, SDDL_REVISION_1, &sd,
                                                              NULL))
        return GetLastError();
    sa.lpSecurityDescriptor = sd;
    file = CreateFileW(path, GENERIC_WRITE, 0, &sa, CREATE_NEW, FILE_ATTRIBUTE_NORMAL, NULL);
    if (file == INVALID_HANDLE_VALUE)
        err = GetLastError();
    LocalFree(sd);
    if (err != ERROR_SUCCESS)
        return err;
    while (done < size) {
        if (!WriteFile(file, data + done, size - done, &n, NULL)) {
            err = GetLastError();
            break;
        }
        done += n;
    }
    if (err == ERROR_SUCCESS && !FlushFileBuffers(file))
        err = GetLastError();
    if (!CloseHandle(file) && err == ERROR_SUCCESS)
        err = GetLastError();
    return err;
}

/* The paths of WriteSecret's transaction files under root; any may be NULL (out of memory). */
struct secret_paths {
    WCHAR *secret, *next, *bak, *absent;
};

static BOOL secret_paths(const WCHAR *root, struct secret_paths *p)
{
    p->secret = wconcat(root, SECRET, NULL);
    p->next = wconcat(root, SECRET_NEW, NULL);
    p->bak = wconcat(root, SECRET_BAK, NULL);
    p->absent = wconcat(root, SECRET_ABSENT, NULL);
    return p->secret && p->next && p->bak && p->absent;
}

static void free_secret_paths(struct secret_paths *p)
{
    release(p->secret, 0);
    release(p->next, 0);
    release(p->bak, 0);
    release(p->absent, 0);
}

/* ---- WriteSecret / RollbackSecret / CommitSecret ---------------------------------------- */

/*
 * The transaction, in files: WriteSecret writes secret.txt.new, then moves an existing
 * secret.txt to secret.txt.bak (or, when there is none, creates the marker secret.txt.absent)
 * and renames secret.txt.new to secret.txt. RollbackSecret puts back what was there before:
 * secret.txt.bak, or nothing when the marker says there was nothing. When neither exists,
 * WriteSecret changed nothing (an empty or "dummy" secret, or it failed early) and an existing
 * secret.txt is kept: deleting it then would lose the secret of the installed agent, which no
 * MSI rollback brings back. CommitSecret deletes the backup and the marker.
 */

/* Backups and markers left by an install that neither committed nor rolled back (rollback
   disabled, a crash) describe no state of this install: this one's rollback must not act on
   them. Returns a Win32 error, with the file concerned in *where. */
static DWORD drop_stale(const struct secret_paths *p, const WCHAR **where)
{
    const WCHAR *files[3] = {p->bak, p->absent, p->next};
    for (int i = 0; i < 3; i++) {
        DWORD err = delete_file(files[i]);
        if (err != ERROR_SUCCESS) {
            *where = files[i];
            return err;
        }
    }
    return ERROR_SUCCESS;
}

/* Writes secret (non-empty) to <root>secret.txt; see above. Returns a Win32 error. */
static DWORD write_secret(MSIHANDLE install, const struct secret_paths *p, const WCHAR *secret)
{
    char *utf8 = NULL;
    int size;
    DWORD err;
    const WCHAR *what, *where = NULL;

    /* Invalid UTF-16 fails rather than turning into U+FFFD: a changed secret never enrolls. */
    size = WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, secret, -1, NULL, 0, NULL, NULL);
    if (size <= 0) {
        err = GetLastError();
        what = L"WriteSecret: the secret is not valid UTF-16";
        goto done;
    }
    utf8 = alloc((SIZE_T)size);
    if (utf8 == NULL) {
        err = ERROR_NOT_ENOUGH_MEMORY;
        what = L"WriteSecret: out of memory";
        goto done;
    }
    WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, secret, -1, utf8, size, NULL, NULL);
    /* size counts the terminator, which the file does not get */
    err = write_private_file(p->next, utf8, (DWORD)size - 1);
    if (err != ERROR_SUCCESS) {
        what = L"WriteSecret: cannot write", where = p->next;
        goto done;
    }
    if (exists(p->secret)) {
        err = move_over(p->secret, p->bak);
        if (err != ERROR_SUCCESS) {
            what = L"WriteSecret: cannot back up", where = p->secret;
            goto done;
        }
    } else {
        HANDLE marker = CreateFileW(p->absent, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS,
                                    FILE_ATTRIBUTE_NORMAL, NULL);
        if (marker == INVALID_HANDLE_VALUE) {
            err = GetLastError();
            what = L"WriteSecret: cannot create", where = p->absent;
            goto done;
        }
        CloseHandle(marker);
    }
    err = move_over(p->next, p->secret);
    if (err != ERROR_SUCCESS) {
        /* This failure starts the rollback, and RollbackSecret restores the backup. */
        what = L"WriteSecret: cannot rename secret.txt.new to", where = p->secret;
        goto done;
    }
    log_line(install, L"WriteSecret: wrote", p->secret, 0);

done:
    if (err != ERROR_SUCCESS) {
        log_line(install, what, where, err);
        delete_file(p->next);
    }
    release(utf8, (SIZE_T)(size > 0 ? size : 0));
    return err;
}

EXPORT UINT __stdcall WriteSecret(MSIHANDLE install)
{
    SIZE_T bytes = 0;
    WCHAR *data = get_action_data(install, &bytes), *root = NULL, *secret;
    struct secret_paths p = {0};
    const WCHAR *where = NULL;
    DWORD err;
    UINT rc = ERROR_INSTALL_FAILURE;

    if (data == NULL) {
        log_line(install, L"WriteSecret: cannot read CustomActionData", NULL, 0);
        return ERROR_INSTALL_FAILURE;
    }
    secret = split_root(data, &root);
    if (root == NULL || !secret_paths(root, &p)) {
        log_line(install, L"WriteSecret: out of memory", NULL, ERROR_NOT_ENOUGH_MEMORY);
        goto done;
    }
    if (secret == NULL) {
        log_line(install, L"WriteSecret: CustomActionData is not <root>|<secret>", NULL, 0);
        goto done;
    }
    if (!is_drive_path(root)) {
        log_line(install, L"WriteSecret: not an absolute path:", root, 0);
        goto done;
    }
    err = drop_stale(&p, &where);
    if (secret[0] == 0 || wequal(secret, L"dummy")) {
        /* An MSI built without an enroll secret: keep the one a previous install wrote. */
        if (err != ERROR_SUCCESS)
            log_line(install, L"WriteSecret: cannot delete", where, err);
        log_line(install, L"WriteSecret: no secret given, secret.txt left as it is", NULL, 0);
        rc = ERROR_SUCCESS;
    } else if (err != ERROR_SUCCESS) {
        log_line(install, L"WriteSecret: cannot delete", where, err);
    } else if (write_secret(install, &p, secret) == ERROR_SUCCESS) {
        rc = ERROR_SUCCESS;
    }
done:
    free_secret_paths(&p);
    release(root, 0);
    release(data, bytes); /* it held the secret */
    return rc;
}

EXPORT UINT __stdcall RollbackSecret(MSIHANDLE install)
{
    SIZE_T bytes = 0;
    WCHAR *data = get_action_data(install, &bytes), *root = NULL;
    struct secret_paths p = {0};
    DWORD err;

    if (data == NULL) {
        log_line(install, L"RollbackSecret: cannot read CustomActionData", NULL, 0);
        return ERROR_SUCCESS;
    }
    split_root(data, &root);
    if (root == NULL || !is_drive_path(root) || !secret_paths(root, &p)) {
        log_line(install, L"RollbackSecret: no usable root in CustomActionData", NULL, 0);
        goto done;
    }
    if ((err = delete_file(p.next)) != ERROR_SUCCESS)
        log_line(install, L"RollbackSecret: cannot delete", p.next, err);
    if (exists(p.bak)) {
        if ((err = move_over(p.bak, p.secret)) != ERROR_SUCCESS)
            log_line(install, L"RollbackSecret: cannot restore", p.bak, err);
        else
            log_line(install, L"RollbackSecret: restored", p.secret, 0);
    } else if (exists(p.absent)) {
        if ((err = delete_file(p.secret)) != ERROR_SUCCESS)
            log_line(install, L"RollbackSecret: cannot delete", p.secret, err);
        else
            log_line(install, L"RollbackSecret: deleted", p.secret, 0);
    }
    if ((err = delete_file(p.absent)) != ERROR_SUCCESS)
        log_line(install, L"RollbackSecret: cannot delete", p.absent, err);
done:
    free_secret_paths(&p);
    release(root, 0);
    release(data, bytes);
    return ERROR_SUCCESS;
}

EXPORT UINT __stdcall CommitSecret(MSIHANDLE install)
{
    SIZE_T bytes = 0;
    WCHAR *data = get_action_data(install, &bytes), *root = NULL;
    struct secret_paths p = {0};
    DWORD err;

    if (data == NULL) {
        log_line(install, L"CommitSecret: cannot read CustomActionData", NULL, 0);
        return ERROR_SUCCESS;
    }
    split_root(data, &root);
    if (root == NULL || !is_drive_path(root) || !secret_paths(root, &p)) {
        log_line(install, L"CommitSecret: no usable root in CustomActionData", NULL, 0);
        goto done;
    }
    if ((err = delete_file(p.bak)) != ERROR_SUCCESS)
        log_line(install, L"CommitSecret: cannot delete", p.bak, err);
    if ((err = delete_file(p.absent)) != ERROR_SUCCESS)
        log_line(install, L"CommitSecret: cannot delete", p.absent, err);
done:
    free_secret_paths(&p);
    release(root, 0);
    release(data, bytes);
    return ERROR_SUCCESS;
}

/* ---- RemoveOrbitRoot -------------------------------------------------------------------- */

struct remover {
    MSIHANDLE install;
    DWORD start;  /* GetTickCount() when the removal began */
    DWORD failed; /* entries left in place */
};

/* The path without the \\?\ the removal works with, for the log. */
static const WCHAR *shown(const WCHAR *path)
{
    BOOL prefixed = path[0] == L'\\' && path[1] == L'\\' && path[2] == L'?' && path[3] == L'\\';
    return prefixed ? path + 4 : path;
}

/* Errors worth waiting out: a file still open or mapped (a child of the service exiting), or
   deleted but still open elsewhere, which keeps its directory non-empty until closed. */
static BOOL busy(DWORD err)
{
    return err == ERROR_SHARING_VIOLATION || err == ERROR_ACCESS_DENIED ||
           err == ERROR_LOCK_VIOLATION || err == ERROR_DIR_NOT_EMPTY ||
           err == ERROR_USER_MAPPED_FILE;
}

/* Clears the read-only attribute of path itself, never of what a link points to. */
static void make_writable(const WCHAR *path)
{
    FILE_BASIC_INFO info = {0};
    HANDLE h = CreateFileW(path, FILE_WRITE_ATTRIBUTES,
                           FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                           OPEN_EXISTING,
                           FILE_FLAG_OPEN_REPARSE_POINT | FILE_FLAG_BACKUP_SEMANTICS, NULL);
    if (h == INVALID_HANDLE_VALUE)
        return;
    info.FileAttributes = FILE_ATTRIBUTE_NORMAL; /* zero times: leave them as they are */
    SetFileInformationByHandle(h, FileBasicInfo, &info, sizeof(info));
    CloseHandle(h);
}

/*
 * Deletes one entry (a file, an empty directory, or a link, which RemoveDirectoryW and
 * DeleteFileW remove without touching their target), retrying busy ones until the shared
 * deadline. Logs and counts what stays.
 */
static void remove_entry(struct remover *r, const WCHAR *path, DWORD attrs)
{
    BOOL dir = (attrs & FILE_ATTRIBUTE_DIRECTORY) != 0;
    if (attrs & FILE_ATTRIBUTE_READONLY)
        make_writable(path);
    for (;;) {
        DWORD err;
        if (dir ? RemoveDirectoryW(path) : DeleteFileW(path))
            return;
        err = GetLastError();
        if (err == ERROR_FILE_NOT_FOUND || err == ERROR_PATH_NOT_FOUND)
            return; /* gone meanwhile */
        if (!busy(err) || GetTickCount() - r->start >= REMOVE_RETRY_MS) {
            log_line(r->install, L"RemoveOrbitRoot: cannot delete", shown(path), err);
            r->failed++;
            return;
        }
        Sleep(200);
    }
}

/* Deletes directory dir (a real one, not a link) and everything in it. */
static void remove_tree(struct remover *r, const WCHAR *dir, DWORD attrs, int depth)
{
    WIN32_FIND_DATAW fd;
    WCHAR *pattern;
    HANDLE find;

    if (depth > REMOVE_MAX_DEPTH) {
        log_line(r->install, L"RemoveOrbitRoot: too deep, left in place:", shown(dir), 0);
        r->failed++;
        return;
    }
    pattern = wconcat(dir, L"\\*", NULL);
    if (pattern == NULL)
        return;
    find = FindFirstFileW(pattern, &fd);
    release(pattern, 0);
    if (find != INVALID_HANDLE_VALUE) {
        do {
            WCHAR *child;
            if (wequal(fd.cFileName, L".") || wequal(fd.cFileName, L".."))
                continue;
            child = wconcat(dir, L"\\", fd.cFileName);
            if (child == NULL) {
                r->failed++;
                continue;
            }
            /* A junction or symbolic link to a directory is a directory with a reparse
               point: remove the link, never descend into its target. */
            if ((fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) &&
                !(fd.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT))
                remove_tree(r, child, fd.dwFileAttributes, depth + 1);
            else
                remove_entry(r, child, fd.dwFileAttributes);
            release(child, 0);
        } while (FindNextFileW(find, &fd));
        FindClose(find);
    }
    remove_entry(r, dir, attrs);
}

/*
 * The root must look like an install directory: "X:\a\b..." with at least two components,
 * none of them "." or "..", empty, or ending in a dot or space (Win32 would rewrite those),
 * and no wildcard or stream syntax. Never a drive root, a relative path or "C:\Program Files".
 */
static BOOL safe_root(const WCHAR *root)
{
    const WCHAR *p;
    int components = 0;
    if (!is_drive_path(root))
        return FALSE;
    for (p = root + 3; *p;) {
        const WCHAR *start = p;
        while (*p && *p != L'\\') {
            if (*p < 32 || *p == L'/' || *p == L':' || *p == L'*' || *p == L'?' ||
                *p == L'"' || *p == L'<' || *p == L'>' || *p == L'|')
                return FALSE;
            p++;
        }
        if (p == start || p[-1] == L'.' || p[-1] == L' ')
            return FALSE; /* empty, ".", "..", "name." or "name " */
        components++;
        if (*p)
            p++;
    }
    return components >= 2;
}

EXPORT UINT __stdcall RemoveOrbitRoot(MSIHANDLE install)
{
    SIZE_T bytes = 0;
    WCHAR *data = get_action_data(install, &bytes), *root = NULL, *path = NULL;
    struct remover r = {install, 0, 0};
    SIZE_T n;
    DWORD attrs;

    if (data == NULL) {
        log_line(install, L"RemoveOrbitRoot: cannot read CustomActionData", NULL, 0);
        return ERROR_SUCCESS;
    }
    split_root(data, &root);
    if (root == NULL)
        goto done;
    /* split_root added the one trailing backslash; the checks and the removal go without. */
    n = wlen(root);
    root[n - 1] = 0;
    if (!safe_root(root)) {
        log_line(install, L"RemoveOrbitRoot: refusing to remove",
                 root[0] ? root : L"an empty path", 0);
        goto done;
    }
    /* The \\?\ form lifts the MAX_PATH limit (the checks above rule out what Win32 would
       normalise in a plain path). */
    path = wconcat(L"\\\\?\\", root, NULL);
    if (path == NULL)
        goto done;
    attrs = GetFileAttributesW(path);
    if (attrs == INVALID_FILE_ATTRIBUTES) {
        log_line(install, L"RemoveOrbitRoot: nothing to remove at", root, GetLastError());
        goto done;
    }
    r.start = GetTickCount();
    if ((attrs & FILE_ATTRIBUTE_DIRECTORY) && !(attrs & FILE_ATTRIBUTE_REPARSE_POINT))
        remove_tree(&r, path, attrs, 0);
    else
        remove_entry(&r, path, attrs); /* a link (or a file) in the root's place */
    if (r.failed)
        log_line(install, L"RemoveOrbitRoot: could not remove everything in", root, 0);
    else
        log_line(install, L"RemoveOrbitRoot: removed", root, 0);
done:
    release(path, 0);
    release(root, 0);
    release(data, bytes);
    /* Success even when something stays: a failed uninstall leaves the product registered. */
    return ERROR_SUCCESS;
}
