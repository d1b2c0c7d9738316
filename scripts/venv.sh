# Sourced by scripts/install-deps and scripts/check-terraform.
# ensure_venv DIR SPEC: a virtualenv at DIR holding SPEC ("dist==version" or
# "dist[extras]==version"), rebuilt when missing, half-installed or another
# version (so bumping a pin takes effect on the next run).
ensure_venv() {
    local dir=$1 spec=$2
    local dist=${spec%%[[=]*} version=${spec##*==}
    if [ -x "$dir/bin/python" ] && [ -f "$dir/.installed" ] \
        && [ "$("$dir/bin/python" -c "import importlib.metadata as m; print(m.version('$dist'))" 2>/dev/null)" = "$version" ]; then
        return 0
    fi
    echo "installing $spec into $dir" >&2
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    "${PYTHON:-python3}" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$spec"
    # Written last: a venv without it (an interrupted install) is rebuilt.
    touch "$dir/.installed"
}
