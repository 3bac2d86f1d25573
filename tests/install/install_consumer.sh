#!/usr/bin/env bash
# install_consumer: `cmake --install` into a scratch prefix must give the tool, the header, both
# libraries, a pkg-config file and a CMake package that a separate project can build against.
# Usage: install_consumer.sh BUILD_DIR WORK_DIR CONSUMER_SRC BINDIR INCLUDEDIR LIBDIR CC CMAKE
set -u
build=$1 work=$2 src=$3 bindir=$4 includedir=$5 libdir=$6 cc=$7 cmake=$8
# A sanitizer build's static library needs the sanitizer runtimes in every program it links.
san=${9:-}
sanflags=()
[ -n "$san" ] && sanflags=("-fsanitize=$san")
prefix=$work/prefix
failures=0
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}
step() {
    echo "== $*"
}

case "$libdir$bindir$includedir" in
/*) echo "FAIL: an absolute install directory would escape the scratch prefix"; exit 1 ;;
esac
rm -rf "$work"
mkdir -p "$work"

step "cmake --install $build --prefix $prefix"
"$cmake" --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 || {
    cat "$work/install.log"
    echo "FAIL: cmake --install"
    exit 1
}
[ "$libdir" = lib ] || echo "note: libraries go to $libdir (CMAKE_INSTALL_LIBDIR), not lib"
for f in "$bindir/clbn" "$includedir/clbn.h" "$libdir/libclbn.so" "$libdir/libclbn.a" \
    "$libdir/pkgconfig/clbn.pc" "$libdir/cmake/clbn/clbnConfig.cmake" \
    "$libdir/cmake/clbn/clbnConfigVersion.cmake"; do
    if [ -e "$prefix/$f" ]; then echo "ok   $f"; else fail "missing $prefix/$f"; fi
done

step "the installed tool runs from the prefix"
env -u LD_LIBRARY_PATH "$prefix/$bindir/clbn" --version || fail "installed clbn --version"
env -u LD_LIBRARY_PATH "$prefix/$bindir/clbn" devices >/dev/null || fail "installed clbn devices"

step "find_package(clbn) from a separate project"
if "$cmake" -S "$src" -B "$work/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS="${sanflags[*]}" \
    -DCMAKE_EXE_LINKER_FLAGS="${sanflags[*]}" >"$work/consumer-configure.log" 2>&1 &&
    "$cmake" --build "$work/consumer-build" -j2 >"$work/consumer-build.log" 2>&1; then
    grep -q "$prefix" "$work/consumer-build/CMakeCache.txt" ||
        fail "the consumer did not find clbn under $prefix"
    "$work/consumer-build/clbn_consumer" || fail "consumer linked with clbn::clbn"
    "$work/consumer-build/clbn_consumer_static" || fail "consumer linked with clbn::clbn_static"
else
    cat "$work/consumer-configure.log" "$work/consumer-build.log" 2>/dev/null | tail -30
    fail "configuring or building the find_package consumer"
fi

step "pkg-config --cflags --libs clbn"
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
if flags=$(pkg-config --cflags --libs clbn); then
    echo "flags: $flags"
    # The header must come from this prefix, not from an older install elsewhere.
    want=$(realpath -m "$prefix/$includedir")
    found=0
    for f in $(pkg-config --cflags-only-I clbn); do
        [ "$(realpath -m "${f#-I}")" = "$want" ] && found=1
    done
    [ "$found" -eq 1 ] ||
        fail "clbn.pc does not point into the prefix it was installed to ($prefix): $flags"
    # shellcheck disable=SC2086
    if "$cc" -std=c11 -Wall -Wextra -Werror "${sanflags[@]}" "$src/main.c" $flags -lm -o "$work/pc_consumer"; then
        LD_LIBRARY_PATH="$prefix/$libdir" "$work/pc_consumer" || fail "pkg-config consumer"
    else
        fail "compiling with pkg-config --cflags --libs clbn"
    fi
else
    fail "pkg-config --cflags --libs clbn"
fi

echo "install_consumer: $failures failures"
[ "$failures" -eq 0 ]
