#!/usr/bin/env bash
# Checks template.yaml offline, in seconds:
#   1. cfn-lint (pinned in infra/versions.env), informational checks included, then
#      `sam validate --lint` (the SAM CLI's own transform and lint, from .local/sam-venv);
#   2. who may do what: every permission of every function, from its IAM role and from the KMS key
#      policies, printed as a table; fails if a function other than the settlement worker may call
#      kms:Sign (DESIGN I7; the settlement worker, and settle, which signs a payment itself when its
#      lane is free), if either may not sign with every lane key, or if a permission
#      comes from somewhere this check cannot read (SAM Policies, managed policies);
#   3. key custody (docs/security.md): fails if a key policy names a KMS action by wildcard, if
#      anyone but the KeyAdminRoleArn parameter may call kms:CreateGrant or kms:PutKeyPolicy on a
#      lane key, or if no EventBridge rule reports those calls for every lane key.
#
#   bash infra/deploy/template-check.sh [--policies-only] [template.yaml]
#
# --policies-only skips step 1 (seconds instead of ten): infra/checks/template-check-selftest.sh
# feeds it doctored templates that must fail.
#
# Needs .local/venv (bash infra/install.sh) and .local/sam-venv (bash infra/deploy/install-sam.sh).
# Deploying is described in docs/deploy.md.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
POLICIES_ONLY=false
if [[ "${1:-}" == "--policies-only" ]]; then POLICIES_ONLY=true; shift; fi
TEMPLATE="${1:-$REPO/template.yaml}"
VENV="$REPO/.local/venv"
if [[ ! -x "$VENV/bin/cfn-lint" ]]; then
  echo "template-check: no $VENV/bin/cfn-lint; run bash infra/install.sh first" >&2
  exit 1
fi

if ! $POLICIES_ONLY; then
echo "template-check: cfn-lint $("$VENV/bin/cfn-lint" --version | cut -d' ' -f2) on ${TEMPLATE#"$REPO"/}"
"$VENV/bin/cfn-lint" --include-checks I -- "$TEMPLATE"
echo "template-check: cfn-lint found nothing"

SAM="$REPO/.local/sam-venv/bin/sam"
if [[ ! -x "$SAM" ]]; then
  echo "template-check: no $SAM; run bash infra/deploy/install-sam.sh first" >&2
  exit 1
fi
# Offline: --lint needs no credentials; the region only names the partition; no usage telemetry.
SAM_CLI_TELEMETRY=0 "$SAM" validate --lint --template "$TEMPLATE" --region us-east-1
fi

# The functions allowed to sign: the worker, and settle (docs/settlement.md, "Signing in /settle").
# Replay re-sends stored bytes and must not; if it ever signs fee bumps, add ReplayFunction here and
# its role to the key policies' SenderSignsDigests.
SIGNERS="SettleWorkerFunction SettleFunction"

"$VENV/bin/python" - "$TEMPLATE" "$SIGNERS" <<'PY'
"""Who may do what, from the template alone (cfn-lint's own YAML reader, so !Ref and friends parse)."""
import fnmatch
import sys

from cfnlint.decode import decode

path, signers = sys.argv[1], set(sys.argv[2].split())
template, problems = decode(path)
if problems or template is None:
    sys.exit(f"template-check: cannot read {path}: {problems}")
resources = template.get("Resources", {})
failures = []

FUNCTION_TYPES = {"AWS::Serverless::Function", "AWS::Lambda::Function"}
SIGN = "kms:sign"


def as_list(value):
    return value if isinstance(value, list) else [value]


def logical_id(value):
    """The resource an intrinsic points at: Ref X, GetAtt X.Arn, or None."""
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref" and isinstance(arg, str):
            return arg
        if fn == "Fn::GetAtt":
            return (arg.split(".")[0] if isinstance(arg, str) else arg[0])
    return None


def show(value):
    """A resource or principal, short: the logical id, the Sub string, or the condition it hangs on."""
    if isinstance(value, str):
        return value
    target = logical_id(value)
    if target:
        return target
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        sub = sub if isinstance(sub, str) else sub[0]
        return sub.replace("arn:${AWS::Partition}:", "").replace(":${AWS::Region}:${AWS::AccountId}:", ":")
    if isinstance(value, dict) and "Fn::If" in value:
        cond, yes, _ = value["Fn::If"]
        return f"{show(yes)} [if {cond}]"
    return str(value)


def allows(statement, action):
    """Whether an Allow statement covers the action (wildcards, NotAction)."""
    if statement.get("Effect") != "Allow":
        return False
    if "NotAction" in statement:
        return not any(fnmatch.fnmatch(action, a.lower()) for a in as_list(statement["NotAction"]))
    return any(fnmatch.fnmatch(action, a.lower()) for a in as_list(statement.get("Action", [])))


# Function -> role, and the roles' own statements.
functions = {}
for name, res in resources.items():
    if res.get("Type") not in FUNCTION_TYPES:
        continue
    props = res.get("Properties", {})
    if "Policies" in props or "Policies" in template.get("Globals", {}).get("Function", {}):
        failures.append(f"{name}: SAM Policies; give it an explicit Role so its permissions are checked here")
    role = logical_id(props.get("Role"))
    if not role or resources.get(role, {}).get("Type") != "AWS::IAM::Role":
        failures.append(f"{name}: its Role is not an AWS::IAM::Role of this template")
        continue
    functions[name] = role

grants = {role: [] for role in set(functions.values())}  # role -> [(source, statement)]
for name, res in resources.items():
    props = res.get("Properties", {})
    if res.get("Type") == "AWS::IAM::Role" and name in grants:
        if props.get("ManagedPolicyArns") or props.get("PermissionsBoundary"):
            failures.append(f"{name}: managed policies cannot be read here; write the statements inline")
        for policy in props.get("Policies", []):
            for st in as_list(policy["PolicyDocument"]["Statement"]):
                grants[name].append(("IAM", st))
    elif res.get("Type") in {"AWS::IAM::Policy", "AWS::IAM::RolePolicy", "AWS::IAM::ManagedPolicy"}:
        attached = [logical_id(r) or r for r in as_list(props.get("Roles", props.get("RoleName", [])))]
        for role in attached:
            if role in grants:
                for st in as_list(props["PolicyDocument"]["Statement"]):
                    grants[role].append(("IAM", st))
    elif res.get("Type") == "AWS::KMS::Key":
        if props.get("KeySpec") != "ECC_SECG_P256K1" or props.get("KeyUsage") != "SIGN_VERIFY":
            failures.append(f"{name}: a lane key must be ECC_SECG_P256K1 / SIGN_VERIFY")
        cond = res.get("Condition")
        key = f"{name} [if {cond}]" if cond else name
        for st in as_list(props.get("KeyPolicy", {}).get("Statement", [])):
            principals = st.get("Principal", {})
            aws = as_list(principals.get("AWS", [])) if isinstance(principals, dict) else [principals]
            for principal in aws:
                role = logical_id(principal)
                if role in grants:
                    grants[role].append(("key policy", {**st, "Resource": key}))
                elif principal == "*" or allows(st, SIGN):
                    # The account root (or anyone) with kms:Sign would let any IAM policy sign.
                    if allows(st, SIGN):
                        failures.append(f"{name}: key policy lets {show(principal)} call kms:Sign")

# Key custody: every KMS action named, and the two that hand out signing (a grant, a new policy)
# only to the key-admin role.
ADMIN_ONLY = ("kms:creategrant", "kms:putkeypolicy")
ADMIN = {"Ref": "KeyAdminRoleArn"}
lane_key_names = [n for n, r in resources.items() if r.get("Type") == "AWS::KMS::Key"]
for name in lane_key_names:
    for st in as_list(resources[name].get("Properties", {}).get("KeyPolicy", {}).get("Statement", [])):
        sid = st.get("Sid", "")
        for action in as_list(st.get("Action", [])) + as_list(st.get("NotAction", [])):
            if "*" in action or "?" in action:
                failures.append(f"{name}: key policy statement {sid} names {action} by wildcard; list each action")
        if "NotAction" in st:
            failures.append(f"{name}: key policy statement {sid} uses NotAction; list each action")
        principals = st.get("Principal", {})
        aws = as_list(principals.get("AWS", [])) if isinstance(principals, dict) else [principals]
        for action in ADMIN_ONLY:
            if allows(st, action) and any(p != ADMIN for p in aws):
                others = ", ".join(show(p) for p in aws if p != ADMIN)
                failures.append(f"{name}: key policy statement {sid} lets {others} call {action}; only KeyAdminRoleArn may")

# The CloudTrail rule that reports those calls, for every lane key.
REPORTED = {"PutKeyPolicy", "CreateGrant", "ScheduleKeyDeletion", "DisableKey"}
reported_keys = set()
for res in resources.values():
    if res.get("Type") != "AWS::Events::Rule":
        continue
    detail = res.get("Properties", {}).get("EventPattern", {}).get("detail", {})
    if REPORTED <= set(as_list(detail.get("eventName", []))):
        for arn in as_list(detail.get("resources", {}).get("ARN", [])):
            inner = arn["Fn::If"][1] if isinstance(arn, dict) and "Fn::If" in arn else arn
            reported_keys.add(logical_id(inner))
for name in lane_key_names:
    if name not in reported_keys:
        failures.append(f"{name}: no EventBridge rule reports {', '.join(sorted(REPORTED))} on it")

# The table, and the one rule that matters most.
rows = []
for function, role in sorted(functions.items()):
    for source, st in sorted(grants[role], key=lambda g: g[0] != "IAM"):
        if st.get("Effect") != "Allow":
            continue
        actions = as_list(st.get("Action", [])) or [f"NOT {a}" for a in as_list(st.get("NotAction", []))]
        resources_shown = ", ".join(show(r) for r in as_list(st.get("Resource", "*")))
        conditioned = " (conditions)" if st.get("Condition") else ""
        rows.append((function, source, ", ".join(actions) + conditioned, resources_shown))
        if allows(st, SIGN) and function not in signers:
            failures.append(f"{function}: {source} statement {st.get('Sid', '')} allows kms:Sign on {resources_shown} (only {', '.join(sorted(signers))} may sign)")

lane_keys = sorted(n for n, r in resources.items() if r.get("Type") == "AWS::KMS::Key")
for function in sorted(signers):
    if function not in functions:
        failures.append(f"{function}: the signing function is missing")
        continue
    signable = {st["Resource"].split(" ")[0] for src, st in grants[functions[function]] if src == "key policy" and allows(st, SIGN)}
    for key in lane_keys:
        if key not in signable:
            failures.append(f"{function}: may not sign with {key}; settlements on that lane would stall")

widths = [max(len(r[i]) for r in rows + [("function", "granted by", "may", "on")]) for i in range(3)]
print()
print(f"{'function':<{widths[0]}}  {'granted by':<{widths[1]}}  {'may':<{widths[2]}}  on")
last = None
for function, source, actions, on in rows:
    shown = function if function != last else ""
    last = function
    print(f"{shown:<{widths[0]}}  {source:<{widths[1]}}  {actions:<{widths[2]}}  {on}")
print()
if failures:
    for f in failures:
        print(f"template-check: FAIL {f}", file=sys.stderr)
    sys.exit(1)
print(f"template-check: only {', '.join(sorted(signers))} may call kms:Sign; it may on {', '.join(lane_keys)}")
PY
