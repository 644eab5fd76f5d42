# Sourced by the project's scripts: points cargo (through torch-sys) at the project's libtorch.
DIFFGAP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DIFFGAP_ROOT
export VIRTUAL_ENV="$DIFFGAP_ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
