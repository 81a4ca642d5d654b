# yaml2man.awk: turns an annotated example config (configs/*.yaml) into the key reference of a
# section-5 man page, so that the example file stays the one source of every key, its default
# and its description. Why awk: it runs at build time with nothing but what Debian always has.
#
#   awk -f yaml2man.awk -v template=T.5.in -v version=V [-v freeform="a b.c"] [-v keys=1] FILE.yaml
#
# The template is copied with @VERSION@ replaced, the line @KEYS@ replaced by one entry per key
# and @EXAMPLE@ by FILE verbatim. With keys=1 it prints only the dotted key paths, one a line
# (what the documentation test compares with the program's --print-config).
#
# Conventions of the annotated files it reads:
#   key: value   # text      -> the key, its default (its example inside a list), a description
#   # text                   -> (full-line comments) description of the key that follows
#   # key: value   (text)    -> a documented optional key with no default, shown as an example
#   - key: value             -> an item of a list; the parent key is written parent[]
# Keys under a free-form map (freeform="labels agents[].env") are examples, not keys.

function rtrim(s) { sub(/[ \t]+$/, "", s); return s }
function esc(s) {
    gsub(/\\/, "\\e", s)
    gsub(/-/, "\\-", s)
    return s
}
function line_text(s) {
    s = esc(s)
    if (s ~ /^[.']/) s = "\\&" s
    return s
}
# Splits "value   # comment" at the first " #" that is outside double quotes.
function split_comment(s,   i, c, q) {
    q = 0
    for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (c == "\"") q = !q
        else if (c == "#" && !q && (i == 1 || substr(s, i - 1, 1) ~ /[ \t]/)) {
            CMT = rtrim(substr(s, i + 1)); sub(/^ /, "", CMT)
            return rtrim(substr(s, 1, i - 1))
        }
    }
    CMT = ""
    return rtrim(s)
}
function add_key(path, value, desc, example, leaf) {
    if (!(path in seen)) {
        seen[path] = 1
        order[++nkeys] = path
        kval[path] = value; kdesc[path] = desc; kex[path] = example; kleaf[path] = leaf
    } else if (kdesc[path] == "" && desc != "") {
        kdesc[path] = desc
    }
}
function is_free(path,   n, i, parts) {
    n = split(freeform, parts, " ")
    for (i = 1; i <= n; i++)
        if (index(path, parts[i] ".") == 1) return 1
    return 0
}

{ raw[++nl] = $0 }

END {
    depth = 0
    pending = ""
    for (l = 1; l <= nl; l++) {
        s = raw[l]
        if (s ~ /^[ \t]*$/) { pending = ""; continue }
        if (s ~ /^[ \t]*#/) {
            t = s; sub(/^[ \t]*# ?/, "", t)
            if (t ~ /^[a-z_]+:( |$)/ && depth > 0) {
                # a commented-out optional key: indentation of the '#' gives its level
                ind = match(s, /#/) - 1
                k = t; sub(/:.*/, "", k)
                v = t; sub(/^[a-z_]+:[ ]*/, "", v)
                while (depth > 0 && stack_ind[depth] >= ind) depth--
                p = (depth > 0 ? stack_path[depth] "." : "") k
                if (!is_free(p)) add_key(p, rtrim(v), pending, 1, 1)
                pending = ""
                continue
            }
            if (depth == 0 && nkeys == 0) continue   # the file's header comment
            pending = (pending == "" ? t : pending " " t)
            continue
        }
        ind = match(s, /[^ ]/) - 1
        body = substr(s, ind + 1)
        item = 0
        if (body ~ /^- /) {
            item = 1
            body = substr(body, 3)
            ind += 2
        }
        if (body !~ /^"?[A-Za-z_][A-Za-z0-9_.-]*"?:/) { pending = ""; continue }
        k = body; sub(/:.*/, "", k); gsub(/"/, "", k)
        rest = body; sub(/^"?[A-Za-z_][A-Za-z0-9_.-]*"?:[ ]*/, "", rest)
        v = split_comment(rest)
        desc = CMT
        if (pending != "") desc = (desc == "" ? pending : pending " " desc)
        pending = ""
        while (depth > 0 && stack_ind[depth] >= ind) depth--
        if (item && depth > 0 && stack_path[depth] !~ /\[\]$/) {
            # the parent of a list item is a list: parent[]
            old = stack_path[depth]
            stack_path[depth] = old "[]"
            if (old in seen) { order_fix[old] = old "[]" }
        }
        p = (depth > 0 ? stack_path[depth] "." : "") k
        inlist = (p ~ /\[\]/)
        # a key with no value whose next key line is deeper is a section
        leaf = 1
        if (v == "") {
            for (m = l + 1; m <= nl; m++) {
                if (raw[m] ~ /^[ \t]*$/ || raw[m] ~ /^[ \t]*#/) continue
                nind = match(raw[m], /[^ ]/) - 1
                leaf = !(nind > ind || (nind == ind && raw[m] ~ /^[ ]*- /))
                break
            }
        }
        if (is_free(p ".")) { leaf = 1; v = "{ NAME: value, ... }"; inlist = 1 }
        if (!is_free(p)) add_key(p, v, desc, inlist, leaf)
        depth++
        stack_ind[depth] = ind
        stack_path[depth] = p
    }
    # apply renames of list parents that were seen before their first item
    for (i = 1; i <= nkeys; i++) if (order[i] in order_fix) {
        o = order[i]; n = order_fix[o]
        order[i] = n; kval[n] = kval[o]; kdesc[n] = kdesc[o]; kex[n] = kex[o]; kleaf[n] = 0
    }
    if (keys) {
        for (i = 1; i <= nkeys; i++) print order[i]
        exit
    }
    while ((getline t < template) > 0) {
        gsub(/@VERSION@/, version, t)
        if (t == "@KEYS@") { print_keys() ; continue }
        if (t == "@EXAMPLE@") { print_example(); continue }
        print t
    }
}

function print_keys(   i, p, top) {
    for (i = 1; i <= nkeys; i++) {
        p = order[i]
        if (p !~ /\./) {
            print ".SS " esc(p)
            if (kdesc[p] != "") { print ".PP"; print line_text(kdesc[p]) }
            if (kleaf[p]) print_entry(p)
            continue
        }
        print_entry(p)
    }
}
function print_entry(p,   v) {
    print ".TP"
    print ".B " esc(p)
    if (kdesc[p] != "") print line_text(kdesc[p])
    if (!kleaf[p]) { if (kdesc[p] == "") print "A section; its keys follow."; return }
    v = kval[p]; gsub(/  +/, " ", v)
    if (v == "") v = "(none)"
    print ".br"
    print (kex[p] ? "Example: " : "Default: ") "\\fB" esc(v) "\\fR"
}
function print_example(   l) {
    print ".PP"
    print ".nf"
    print ".ft CR"
    for (l = 1; l <= nl; l++) print line_text(raw[l])
    print ".ft R"
    print ".fi"
}
