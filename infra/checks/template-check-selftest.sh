#!/usr/bin/env bash
# Feeds infra/deploy/template-check.sh copies of template.yaml with one custody mistake each, and
# fails unless the check refuses every one of them with the reason it should give. A check that
# passes everything would otherwise look exactly like a template that is right.
#
#   bash infra/checks/template-check-selftest.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT

# doctored NAME EXPECTED PYTHON: writes $SCRATCH/NAME.yaml by PYTHON (which edits `text`, the
# template's text, once), runs the check on it and wants it to fail saying EXPECTED.
failures=0
doctored() {
  local name="$1" expected="$2" edit="$3"
  python3 - "$REPO/template.yaml" "$SCRATCH/$name.yaml" "$edit" <<'PY'
import sys
source, target, edit = sys.argv[1:]
text = open(source).read()
before = text
exec(edit)
if text == before:
    sys.exit(f"template-check-selftest: the edit for {target} changed nothing; update it to the template")
open(target, "w").write(text)
PY
  local out
  if out="$(bash "$REPO/infra/deploy/template-check.sh" --policies-only "$SCRATCH/$name.yaml" 2>&1)"; then
    echo "template-check-selftest: FAIL $name: the check passed it" >&2
    failures=$((failures + 1))
  elif ! grep -qF -- "$expected" <<<"$out"; then
    echo "template-check-selftest: FAIL $name: refused, but not with \"$expected\":" >&2
    grep 'FAIL' <<<"$out" >&2 || true
    failures=$((failures + 1))
  else
    echo "template-check-selftest: $name refused: $(grep -F -- "$expected" <<<"$out" | head -1 | sed 's/^template-check: FAIL //')"
  fi
}

doctored wildcard-admin "names kms:Describe* by wildcard" \
  'text = text.replace("Action: [kms:DescribeKey, kms:GetKeyPolicy,", "Action: [kms:Describe*, kms:GetKeyPolicy,", 1)'
doctored account-grants "lets iam::\${AWS::AccountId}:root call kms:creategrant" \
  'text = text.replace("Action: [kms:DescribeKey, kms:GetKeyPolicy,", "Action: [kms:CreateGrant, kms:DescribeKey, kms:GetKeyPolicy,", 1)'
doctored replay-signs "ReplayFunction: key policy statement SenderSignsDigests allows kms:Sign" \
  'text = text.replace("Principal: {AWS: [!GetAtt SettleWorkerRole.Arn, !GetAtt SettleRole.Arn]}\n            Action: kms:Sign", "Principal: {AWS: [!GetAtt SettleWorkerRole.Arn, !GetAtt SettleRole.Arn, !GetAtt ReplayRole.Arn]}\n            Action: kms:Sign", 1)'
doctored supported-signs "SupportedFunction: key policy statement SenderSignsDigests allows kms:Sign" \
  'text = text.replace("Principal: {AWS: [!GetAtt SettleWorkerRole.Arn, !GetAtt SettleRole.Arn]}\n            Action: kms:Sign", "Principal: {AWS: [!GetAtt SettleWorkerRole.Arn, !GetAtt SettleRole.Arn, !GetAtt SupportedRole.Arn]}\n            Action: kms:Sign", 1)'
doctored settle-cannot-sign "SettleFunction: may not sign with LaneKey0" \
  'text = text.replace("Principal: {AWS: [!GetAtt SettleWorkerRole.Arn, !GetAtt SettleRole.Arn]}\n            Action: kms:Sign", "Principal: {AWS: [!GetAtt SettleWorkerRole.Arn]}\n            Action: kms:Sign", 1)'
doctored admin-signs "key policy lets KeyAdminRoleArn call kms:Sign" \
  'text = text.replace("Action: [kms:PutKeyPolicy, kms:CreateGrant,", "Action: [kms:Sign, kms:PutKeyPolicy, kms:CreateGrant,", 1)'
doctored unreported-key "LaneKey3: no EventBridge rule reports" \
  'text = text.replace("              - !If [HasLane3, !GetAtt LaneKey3.Arn, !Ref AWS::NoValue]\n", "", 1)'

if ((failures)); then
  echo "template-check-selftest: $failures doctored template(s) not refused as they should be" >&2
  exit 1
fi
echo "template-check-selftest: every doctored template refused"
