#!/usr/bin/env bash
# Validate the deployment files offline:
#   - the Dockerfile with hadolint, and the paths it copies and runs;
#   - docker-compose.yml with docker-compose 1.29 (installed from apt when missing) and the
#     required DJANGO_SECRET_KEY guard;
#   - deploy/k8s/*.yaml with kubernetes-validate --strict (from the active Python environment,
#     see requirements-dev.txt) and the resource list of kustomization.yaml;
#   - deploy/nginx/sam3.conf with `nginx -t` when nginx happens to be installed.
# Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- docker-compose
if ! command -v docker-compose >/dev/null 2>&1; then
    step "installing docker-compose (apt)"
    [ "$(id -u)" -eq 0 ] || fail "docker-compose is missing and this is not root; install it first"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi

step "docker-compose config ($(docker-compose version --short 2>/dev/null || echo '?'))"
DJANGO_SECRET_KEY=validate-only-not-a-real-secret-0000000000 \
    docker-compose -f docker-compose.yml config -q || fail "docker-compose.yml does not validate"

step "docker-compose refuses to start without DJANGO_SECRET_KEY"
if env -u DJANGO_SECRET_KEY docker-compose -f docker-compose.yml config -q >/dev/null 2>&1; then
    fail "docker-compose.yml must require DJANGO_SECRET_KEY (\${DJANGO_SECRET_KEY:?...})"
fi

# ---------------------------------------------------------------- Dockerfile
# No Docker engine here: hadolint lints it, and every path it copies or runs must exist in the
# build context (present and not excluded by .dockerignore). What only a real build shows (the
# base image, apt, pip inside the image) is not verified here.
HADOLINT=hadolint
command -v "$HADOLINT" >/dev/null 2>&1 || HADOLINT=.venv/bin/hadolint
[ -x "$(command -v "$HADOLINT")" ] || fail "hadolint not found: pip install -r requirements-dev.txt"
step "hadolint Dockerfile ($("$HADOLINT" --version | head -n1))"
"$HADOLINT" --no-color Dockerfile || fail "Dockerfile: hadolint"

step "Dockerfile: COPY sources and RUN scripts are in the build context"
python3 - <<'PYEOF' || fail "Dockerfile names paths the build context does not have"
import fnmatch, pathlib, re, shlex, sys

ignored = [l.strip().rstrip("/") for l in pathlib.Path(".dockerignore").read_text().splitlines()
           if l.strip() and not l.startswith("#") and not l.startswith("!")]
def excluded(path: str) -> bool:
    parts = pathlib.PurePath(path).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatch(prefix, pattern.removeprefix("**/")) or fnmatch.fnmatch(prefix, pattern)
               for pattern in ignored for prefix in prefixes)

text = re.sub(r"\\\n", " ", pathlib.Path("Dockerfile").read_text())
problems = []
for line in text.splitlines():
    words = shlex.split(line, comments=True) if line.strip() else []
    if not words:
        continue
    instruction, arguments = words[0].upper(), words[1:]
    if instruction in ("COPY", "ADD") and not any(a.startswith("--from") for a in arguments):
        for source in [a for a in arguments if not a.startswith("--")][:-1]:
            matches = [str(m) for m in pathlib.Path().glob(source)] if source != "." else ["."]
            if not matches:
                problems.append(f"{instruction} {source}: no such path")
            problems += [f"{instruction} {m}: excluded by .dockerignore" for m in matches if m != "." and excluded(m)]
    if instruction == "RUN":
        for path in re.findall(r"(?<![\w/.-])((?:scripts|\.ci)/[\w./-]+|manage\.py)", " ".join(arguments)):
            if not pathlib.Path(path).exists():
                problems.append(f"RUN uses {path}: no such file")
for problem in problems:
    print(problem, file=sys.stderr)
sys.exit(1 if problems else 0)
PYEOF

# ---------------------------------------------------------------- kubernetes
KV=kubernetes-validate
if ! command -v "$KV" >/dev/null 2>&1; then
    if [ -x .venv/bin/kubernetes-validate ]; then
        KV=.venv/bin/kubernetes-validate
    else
        fail "kubernetes-validate not found: pip install -r requirements-dev.txt"
    fi
fi
PY="$(dirname "$(command -v "$KV")")/python"
[ -x "$PY" ] || PY=python3

manifests=()
for f in deploy/k8s/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue  # not a Kubernetes resource
    manifests+=("$f")
done
step "kubernetes-validate --strict ${manifests[*]}"
"$KV" --strict --quiet "${manifests[@]}" || fail "Kubernetes manifests do not validate"

step "kustomization.yaml lists existing manifests"
"$PY" - <<'PYEOF' || fail "kustomization.yaml is inconsistent"
import pathlib, sys
import yaml

root = pathlib.Path("deploy/k8s")
kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
listed = kustomization.get("resources", [])
missing = []
for name in listed:
    # secret.yaml is the operator's copy of secret.example.yaml (never committed).
    candidate = root / ("secret.example.yaml" if name == "secret.yaml" else name)
    if not candidate.exists():
        missing.append(name)
unlisted = sorted(
    p.name for p in root.glob("*.yaml")
    if p.name not in listed and p.name not in {"kustomization.yaml", "secret.example.yaml"}
)
if missing or unlisted:
    print(f"missing: {missing}  not listed: {unlisted}", file=sys.stderr)
    sys.exit(1)
PYEOF

if command -v kubectl >/dev/null 2>&1; then
    step "kubectl kustomize (with the example secret)"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    cp deploy/k8s/*.yaml "$tmp/"
    [ -f "$tmp/secret.yaml" ] || cp "$tmp/secret.example.yaml" "$tmp/secret.yaml"
    kubectl kustomize "$tmp" >/dev/null || fail "kustomize build failed"
fi

# ---------------------------------------------------------------- nginx (optional)
if command -v nginx >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
    step "nginx -t deploy/nginx/sam3.conf"
    ngx="$(mktemp -d)"
    trap 'rm -rf "${tmp:-}" "$ngx"' EXIT
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=sam3.example.com \
        -keyout "$ngx/key.pem" -out "$ngx/cert.pem" >/dev/null 2>&1
    sed -e "s#/etc/nginx/tls/sam3.example.com/fullchain.pem#$ngx/cert.pem#" \
        -e "s#/etc/nginx/tls/sam3.example.com/privkey.pem#$ngx/key.pem#" \
        -e "s#/var/log/nginx/sam3.access.log#$ngx/access.log#" \
        deploy/nginx/sam3.conf > "$ngx/sam3.conf"
    cat > "$ngx/nginx.conf" <<NGXEOF
pid $ngx/nginx.pid;
error_log $ngx/error.log;
events {}
http {
    access_log $ngx/access-default.log;
    client_body_temp_path $ngx/body;
    proxy_temp_path $ngx/proxy;
    fastcgi_temp_path $ngx/fastcgi;
    uwsgi_temp_path $ngx/uwsgi;
    scgi_temp_path $ngx/scgi;
    include $ngx/sam3.conf;
}
NGXEOF
    nginx -q -t -c "$ngx/nginx.conf" || fail "deploy/nginx/sam3.conf does not pass nginx -t"
fi

step "deployment files OK"
