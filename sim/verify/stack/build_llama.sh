#!/usr/bin/env bash
# Build llama.cpp's llama-server and llama-batched-bench (CPU only) from the
# llama.cpp tree vendored in the llama-cpp-python source distribution on PyPI.
#
#   bash build_llama.sh            # build (or no-op if already built)
#   CAPSIM_CACHE=/some/dir bash build_llama.sh
#
# Output: ${CAPSIM_CACHE:-$HOME/.cache/capsim}/llama-<version>/bin/{llama-server,llama-batched-bench}
# plus .../llama-<version>/STAMP (GGML_LLAMAFILE=OFF: .../llama-<version>-nollamafile/). Idempotent: exits at once if the binaries
# exist and STAMP matches the pin below.
#
# Needs: python3 with pip (PyPI reachable), cmake >= 3.21, gcc/g++, make.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="0.3.36"
LLAMA_CPP_PYTHON_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
JOBS="${JOBS:-2}"
# GGML_LLAMAFILE=OFF builds a variant without llamafile's tinyBLAS sgemm (see
# NOTES.md: with it ON, which is llama.cpp's default, every matmul with >= 2
# columns -- prefill AND batched decode -- goes through tinyBLAS, which is slow
# at 2-8 columns on one core; with it OFF ggml's own blocked dot-product path
# is used and batched decode stays near the memory-bound batch-1 step time).
GGML_LLAMAFILE="${GGML_LLAMAFILE:-ON}"
VARIANT=""
[[ "$GGML_LLAMAFILE" == "OFF" ]] && VARIANT="-nollamafile"

CACHE="${CAPSIM_CACHE:-$HOME/.cache/capsim}"
PREFIX="$CACHE/llama-$LLAMA_CPP_PYTHON_VERSION$VARIANT"
STAMP_FILE="$PREFIX/STAMP"
STAMP="llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sha256=$LLAMA_CPP_PYTHON_SHA256 targets=llama-server,llama-batched-bench cpu-only GGML_LLAMAFILE=$GGML_LLAMAFILE"
PIP="${PIP:-python3 -m pip}"
TARGETS=(llama-server llama-batched-bench)

if [[ -x "$PREFIX/bin/llama-server" && -x "$PREFIX/bin/llama-batched-bench" \
      && -f "$STAMP_FILE" && "$(cat "$STAMP_FILE")" == "$STAMP" ]]; then
    echo "llama.cpp already built: $PREFIX/bin (stamp matches pin $LLAMA_CPP_PYTHON_VERSION)"
    exit 0
fi

t0=$(date +%s)
mkdir -p "$CACHE/src"
SDIST="$CACHE/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"

verify() { echo "$LLAMA_CPP_PYTHON_SHA256  $1" | sha256sum -c --status; }

if [[ -f "$SDIST" ]] && verify "$SDIST"; then
    echo "using cached sdist $SDIST"
else
    rm -f "$SDIST"
    echo "downloading llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist from PyPI"
    dl=$(mktemp -d)
    # --no-build-isolation is NOT used: pip still prepares metadata (~30-60 s).
    $PIP download --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$dl"
    mv "$dl/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" "$SDIST"
    rm -rf "$dl"
fi
if ! verify "$SDIST"; then
    echo "ERROR: sha256 mismatch for $SDIST" >&2
    echo "  expected $LLAMA_CPP_PYTHON_SHA256" >&2
    echo "  got      $(sha256sum "$SDIST" | cut -d' ' -f1)" >&2
    exit 1
fi
echo "sha256 OK: $LLAMA_CPP_PYTHON_SHA256"

SRC="$CACHE/src/unpacked$VARIANT/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
rm -rf "$SRC"
mkdir -p "$CACHE/src/unpacked$VARIANT"
tar -xzf "$SDIST" -C "$CACHE/src/unpacked$VARIANT"
LLAMA="$SRC/vendor/llama.cpp"
BUILD="$CACHE/src/build-$LLAMA_CPP_PYTHON_VERSION$VARIANT"
rm -rf "$BUILD"

# Notes on flags:
#  - LLAMA_CURL is deprecated/ignored in this tree (warning only); kept as asked.
#  - LLAMA_OPENSSL=OFF: plain HTTP on loopback only, no libssl dependency.
#  - LLAMA_USE_PREBUILT_UI=OFF / LLAMA_BUILD_UI=OFF: otherwise the build tries
#    to download the web UI from Hugging Face (no network here); the server
#    runs fine with an empty embedded UI (API endpoints are unaffected).
#  - BUILD_SHARED_LIBS=OFF: self-contained binaries (only libc/libstdc++/libgomp).
#  - GGML_NATIVE=ON (default): -march=native, i.e. tuned for *this* CPU.
cmake -S "$LLAMA" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON \
    -DGGML_NATIVE=ON \
    -DGGML_LLAMAFILE="$GGML_LLAMAFILE" \
    -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_HIP=OFF \
    -DGGML_SYCL=OFF -DGGML_OPENCL=OFF -DGGML_RPC=OFF -DGGML_BLAS=OFF

t1=$(date +%s)
cmake --build "$BUILD" --config Release -j "$JOBS" --target "${TARGETS[@]}"
t2=$(date +%s)

mkdir -p "$PREFIX/bin"
for t in "${TARGETS[@]}"; do
    install -m 0755 "$BUILD/bin/$t" "$PREFIX/bin/$t"
done
# Keep the vendored vocab + gguf-py next to the binaries for make_model.py.
mkdir -p "$PREFIX/share"
cp "$LLAMA/models/ggml-vocab-llama-spm.gguf" "$PREFIX/share/"
rm -rf "$PREFIX/share/gguf-py"
cp -r "$LLAMA/gguf-py" "$PREFIX/share/gguf-py"
(cd "$LLAMA" && git rev-parse HEAD 2>/dev/null || true) > "$PREFIX/LLAMA_CPP_COMMIT"
echo "$STAMP" > "$STAMP_FILE"

# Build tree and unpacked sources are large; drop them (sdist stays cached).
rm -rf "$BUILD" "$CACHE/src/unpacked$VARIANT"

echo "configure+download: $((t1 - t0)) s, compile: $((t2 - t1)) s, total: $(( $(date +%s) - t0 )) s (-j$JOBS)"
echo "binaries: $PREFIX/bin"
"$PREFIX/bin/llama-server" --version 2>&1 | tail -n 2 || true
