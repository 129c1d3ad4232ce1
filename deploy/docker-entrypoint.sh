#!/bin/sh
# Entry point of the antifragile container image (also usable outside a container).
#
# 1. Secrets from files: for every ANTIFRAGILE_<NAME>_FILE, the variable ANTIFRAGILE_<NAME> is
#    set to the file's content (trailing newlines dropped) and the _FILE variable removed --
#    the way Docker / Compose secrets (/run/secrets/...) reach the service. Setting both is an
#    error, and so is a file that cannot be read.
# 2. The SQLite database's directory must be writable by this user (uid 10001 in the image).
# 3. The command: an antifragile subcommand (serve, worker, scheduler, migrate, backup...) runs
#    `antifragile <subcommand> ...`; options alone run `antifragile serve <options>`; anything
#    else (sh, python...) runs as given.
set -eu

fail() {
    echo "error CONFIGURATION: $*" >&2
    exit 1
}

for file_var in $(env | sed -n 's/^\(ANTIFRAGILE_[A-Z0-9_]*_FILE\)=.*$/\1/p'); do
    var=${file_var%_FILE}
    eval "file=\${$file_var}"
    eval "already=\${$var:-}"
    [ -z "$already" ] || fail "both $var and $file_var are set: keep one"
    [ -f "$file" ] && [ -r "$file" ] || fail "$file_var names $file, which is not a readable file"
    value=$(cat "$file")
    export "$var=$value"
    unset "$file_var"
done

case "${ANTIFRAGILE_DATABASE_URL:-}" in
    sqlite:///*)
        path=${ANTIFRAGILE_DATABASE_URL#sqlite:///}
        path=${path%%\?*}
        dir=$(dirname -- "$path")
        [ -d "$dir" ] && [ -w "$dir" ] ||
            fail "the SQLite database's directory $dir is missing or not writable by uid $(id -u) (mount a volume there)"
        ;;
esac

if [ "$#" -eq 0 ]; then
    set -- serve
fi
case "$1" in
    --version | --help)
        set -- antifragile "$@"
        ;;
    -*)
        set -- antifragile serve "$@"
        ;;
    serve | worker | scheduler | migrate | health | breakers | jobs | dlq | backup | restore | sandbox | demo)
        set -- antifragile "$@"
        ;;
esac
exec "$@"
