"""Checks the deploy instructions against template.yaml, offline, with the pinned SAM CLI's own code.

A deploy command that looks right can still deploy a broken stack: the SAM CLI's Key=Value parser
keeps only "[{" of an unquoted JSON value, and CloudFormation accepts it. So, for
infra/deploy/samconfig.example.toml and every `sam deploy` / `sam build` command in docs/*.md:

- every flag is one the pinned SAM CLI has (read from its click commands);
- every parameter override goes through the SAM CLI's parser, names a parameter of the template,
  and passes that parameter's constraints (pattern, allowed values, bounds, length); `Networks`
  must be a JSON list of networks; a command that is not `--guided` gives every required parameter;
- every parameter in the template is in docs/deploy.md's parameter table and the other way round;
- every stack output the docs name exists, and every output is named in docs/deploy.md.

Run with the SAM CLI's Python: .local/sam-venv/bin/python infra/checks/deploy-docs-check.py
"""

import json
import pathlib
import re
import shlex
import sys
import tomllib

from samcli.cli.types import CfnParameterOverridesType
from samcli.commands.build.command import cli as sam_build
from samcli.commands.deploy.command import cli as sam_deploy
from samcli.yamlhelper import yaml_parse

REPO = pathlib.Path(__file__).resolve().parents[2]
template = yaml_parse((REPO / "template.yaml").read_text())
PARAMETERS = template["Parameters"]
OUTPUTS = set(template["Outputs"])
REQUIRED = {name for name, p in PARAMETERS.items() if "Default" not in p}
FLAGS = {
    "deploy": {opt for p in sam_deploy.params for opt in p.opts + p.secondary_opts},
    "build": {opt for p in sam_build.params for opt in p.opts + p.secondary_opts},
}
failures = []


def check_value(where, name, value):
    p = PARAMETERS.get(name)
    if p is None:
        failures.append(f"{where}: {name} is not a parameter of template.yaml")
        return
    if "AllowedValues" in p and value not in [str(v) for v in p["AllowedValues"]]:
        failures.append(f"{where}: {name}={value!r} is not one of {p['AllowedValues']}")
    if "AllowedPattern" in p and not re.fullmatch(p["AllowedPattern"], value):
        failures.append(f"{where}: {name}={value!r} does not match {p['AllowedPattern']}")
    if "MinLength" in p and len(value) < int(p["MinLength"]):
        failures.append(f"{where}: {name}={value!r} is shorter than {p['MinLength']}")
    if p.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            failures.append(f"{where}: {name}={value!r} is not a number")
            return
        if "MinValue" in p and number < float(p["MinValue"]):
            failures.append(f"{where}: {name}={value} is below {p['MinValue']}")
        if "MaxValue" in p and number > float(p["MaxValue"]):
            failures.append(f"{where}: {name}={value} is above {p['MaxValue']}")
    if name == "Networks":
        try:
            networks = json.loads(value)
            assert isinstance(networks, list) and networks
            for n in networks:
                assert "network" in n and "assets" in n and ("rpcUrl" in n or "rpcSecret" in n)
        except (ValueError, AssertionError, TypeError):
            failures.append(f"{where}: Networks={value!r} is not a JSON list of networks")


def check_overrides(where, values, guided):
    try:
        overrides = CfnParameterOverridesType().convert(tuple(values), None, None)
    except Exception as e:  # the SAM CLI's own refusal
        failures.append(f"{where}: the SAM CLI refuses the parameter overrides: {e}")
        return
    for name, value in overrides.items():
        check_value(where, name, value)
    if not guided:
        for name in sorted(REQUIRED - set(overrides)):
            failures.append(f"{where}: the required parameter {name} is not given")


def shell_commands(markdown):
    """Each command of each ```sh block, continuation lines joined."""
    for block in re.findall(r"```sh\n(.*?)```", markdown, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line:
                yield line


def check_sam_command(where, line):
    words = shlex.split(line)
    while words and words[0] != "sam":
        words.pop(0)  # PATH=... and other environment assignments
    if len(words) < 2 or words[1] not in FLAGS:
        return
    command, args = words[1], words[2:]
    flags = [a.split("=", 1)[0] for a in args if a.startswith("--")]
    for flag in flags:
        if flag not in FLAGS[command]:
            failures.append(f"{where}: `sam {command}` has no flag {flag}")
    if command == "deploy" and "--parameter-overrides" in args:
        start = args.index("--parameter-overrides") + 1
        values = []
        for a in args[start:]:
            if a.startswith("--"):
                break
            values.append(a)
        check_overrides(where, values, "--guided" in args)
    elif command == "deploy" and "--guided" not in args and REQUIRED:
        # Without overrides it reads samconfig.toml: the example is checked on its own.
        pass


# The example samconfig.toml.
example = REPO / "infra/deploy/samconfig.example.toml"
config = tomllib.loads(example.read_text())
deploy = config["default"]["deploy"]["parameters"]
for key in deploy:
    flag = "--" + key.replace("_", "-")
    if flag not in FLAGS["deploy"]:
        failures.append(f"{example.name}: `sam deploy` has no option {key}")
check_overrides(example.name, deploy["parameter_overrides"], guided=False)

# The commands in the docs.
commands = 0
for doc in sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]:
    for line in shell_commands(doc.read_text()):
        if re.search(r"(^|\s)sam (deploy|build)\b", line):
            commands += 1
            check_sam_command(f"{doc.relative_to(REPO)}: `{line[:60]}…`", line)

# The parameter table and the outputs in docs/deploy.md.
deploy_md = (REPO / "docs/deploy.md").read_text()
table = set()
for row in re.findall(r"^\| (`[A-Za-z0-9]+`(?:, `[A-Za-z0-9]+`)*) \|", deploy_md, flags=re.M):
    table.update(re.findall(r"`([A-Za-z0-9]+)`", row))
documented = table & set(PARAMETERS)
for name in sorted(set(PARAMETERS) - table):
    failures.append(f"docs/deploy.md: parameter {name} is not in the parameter table")
named_outputs = set()
for doc in sorted((REPO / "docs").glob("*.md")):
    text = doc.read_text()
    for name in re.findall(r"OutputKey==\\?'([A-Za-z0-9]+)\\?'", text):
        named_outputs.add(name)
        if name not in OUTPUTS:
            failures.append(f"{doc.relative_to(REPO)}: the stack has no output {name}")
for name in sorted(OUTPUTS):
    if f"`{name}`" not in deploy_md:
        failures.append(f"docs/deploy.md: the output {name} is not named")

if failures:
    for f in failures:
        print(f"deploy-docs-check: FAIL {f}", file=sys.stderr)
    sys.exit(1)
print(
    f"deploy-docs-check: {commands} sam commands in the docs and the example samconfig.toml agree "
    f"with template.yaml ({len(PARAMETERS)} parameters, all in the table; {len(OUTPUTS)} outputs)"
)
