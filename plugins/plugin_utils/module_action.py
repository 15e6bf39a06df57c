# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The action behind every appc.rocket module: Ansible's normal one, with the cyclic
garbage collector paused while it runs, and a thin payload where the host has this
collection's library.

Before a module first runs in a playbook, the controller builds its payload: it parses
every module_utils file the module can import into an AST (53 of ours for pod_run). Those
allocations set off collections that walk the worker's whole heap again and again; they
more than doubled the build (pod_run: 491 ms with the collector, 315 ms without; our
files' ASTs 246 ms against 98). The worker is a fork that runs this one task and exits,
and ASTs are trees that reference counting frees, so the pause costs no memory to speak of.

Even paused, that build is most of what a one-task playbook of ours costs above ping. The
runtime role installs the same sources on the host, as one zip named by the collection's
version and the zip's digest (roles/runtime/files/pods_program.py). So the action first
sends thin_module.py, a payload of ping's size that runs the module from that zip when the
zip is exactly the one this controller would build and only root could have written it.
When it is not, the host answers why and the full payload follows, as before; that answer
is remembered for the host for the rest of the playbook run (a file in Ansible's local
temporary directory), so later tasks make one round trip, not two. A missing zip is also
remembered for an hour across runs (in ~/.ansible/tmp, when only this user can write it):
the thin attempt costs a host without the library about 250 ms per playbook run, and most
such hosts stay so; the runtime role's ``rocket_runtime_library_version`` fact, set when it
installs a library, makes the next task ask again. A missing zip is said at -vvv; an unsafe
one (wrong digest, owner, mode, a symbolic link) as a warning, in every run. The thin path
is not used for async tasks, delegated tasks, or when ``rocket_thin_payload`` is false.

The direct path goes one step further for the modules whose task needs no more of
AnsibleModule than its arguments, warnings and exits (thin_module.DIRECT_MODULES: every
one). Even thin, a module's payload
imports Ansible's module code on the host (AnsiballZ's loader imports basic.py), about
100 ms of a 60 ms no-op's host side, more than the module's own work. So the action checks
the task's arguments here, with Ansible's own validator and the module's own spec (its
``spec()``), and sends thin_module.py's source as the program, with the validated arguments:
the host verifies the library exactly as before and runs the module's ``task`` from it with a
stand-in for AnsibleModule. The result gets here what AnsibleModule would have added
(``invocation``, no_log values hidden), and the host's log line is the one AnsibleModule
writes. Whenever the outcome could differ from the module's own, the thin payload goes as
before: arguments that fail the check or draw a warning or deprecation, a path-typed value
with ``~`` or ``$`` (expanded on the host, for the host's user), an option with a fallback
(read from the host's environment), arguments JSON cannot carry.
"""
from __future__ import annotations

import dataclasses
import gc
import hashlib
import importlib
import json
import os
import stat
import time

from ansible import constants as C
from ansible.plugins.action.normal import ActionModule as NormalAction
from ansible.utils.display import Display

from ansible_collections.appc.rocket.plugins.plugin_utils import thin_module

display = Display()

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROGRAM = os.path.join(ROOT, "roles", "runtime", "files", "pods_program.py")
THIN_NAME = "appc_rocket_thin"  # the payload's module name: one build per playbook run serves every module
DEFAULT_LIBRARY_DIR = "/usr/lib/appc.rocket"
MISSING_FOR = 3600  # seconds a host without the library is sent the full payload without asking again


class ActionModule(NormalAction):
    _rocket_thin: "dict[str, str] | None" = None
    _rocket_direct: "dict | None" = None

    def run(self, tmp=None, task_vars=None):
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return super().run(tmp, task_vars)
        finally:
            if was_enabled:
                gc.enable()

    def _execute_module(self, module_name=None, module_args=None, tmp=None, task_vars=None, *args, **kwargs):
        plan = None
        if (module_name is None or module_name == self._task.action) and not kwargs.get("wrap_async"):
            plan = self._thin_plan(task_vars or {})
        if plan is not None:
            self._rocket_thin = plan
            self._rocket_direct = None
            try:
                result = super()._execute_module(module_name, module_args, tmp, task_vars, *args, **kwargs)
                direct = self._rocket_direct
            finally:
                self._rocket_thin = None
                self._rocket_direct = None
            answer = result.get(thin_module.FALLBACK) if isinstance(result, dict) else None
            if not isinstance(answer, dict):
                if direct is not None:
                    display.vvv("appc.rocket: direct, the module ran from %s without Ansible's module code"
                                % plan["library"], host=self._play_context.remote_addr)
                    return direct_result(result, direct)
                display.vvv("appc.rocket: thin payload, the module ran from %s" % plan["library"],
                            host=self._play_context.remote_addr)
                return result
            reason = "%s (%s)" % (answer.get("kind"), answer.get("reason"))
            _remember(plan["memo"], reason)
            if answer.get("kind") == thin_module.MISSING and plan["missing"]:
                _remember(plan["missing"], reason)  # for the next runs too: most hosts without one stay so
                _forget_old(os.path.dirname(plan["missing"]))
            message = ("appc.rocket: the host's library is not used, the full module payload follows: %s"
                       % answer.get("reason"))
            if answer.get("kind") == thin_module.MISSING:
                display.vvv(message, host=self._play_context.remote_addr)
            else:
                display.warning(message)
        return super()._execute_module(module_name, module_args, tmp, task_vars, *args, **kwargs)

    def _thin_plan(self, task_vars) -> "dict[str, str] | None":
        """Where the library should be and what it must hash to; None when this task
        sends the full payload (turned off, delegated, or the host said no earlier)."""
        if self._task.delegate_to or not _boolean(self._var(task_vars, "rocket_thin_payload", True)):
            return None
        if getattr(self._connection._shell, "SHELL_FAMILY", "sh") == "powershell":
            return None
        name = self._task.action.rpartition(".")[2]
        if not os.path.isfile(os.path.join(ROOT, "plugins", "modules", name + ".py")):
            return None
        expected = expected_library()
        if expected is None:
            return None
        directory = str(self._var(task_vars, "rocket_runtime_library_dir", DEFAULT_LIBRARY_DIR))
        library = os.path.join(directory, expected["version"], "appc-rocket-pods.pyz")
        # The runtime role sets rocket_runtime_library_version when it installs a library:
        # a "no" from before that is not the answer any more.
        key = json.dumps([task_vars.get("inventory_hostname"), library,
                          str(self._var(task_vars, "rocket_runtime_library_version", ""))])
        name_ = "appc-rocket-thin-" + hashlib.sha256(key.encode()).hexdigest()[:32]
        memo = os.path.join(C.DEFAULT_LOCAL_TMP, name_)
        if os.path.exists(memo):
            return None
        base = _cache_dir()
        missing = os.path.join(base, name_) if base else ""
        if missing and time.time() - _mtime(missing) < MISSING_FOR:
            return None
        return {"library": library, "sha256": expected["sha256"], "module": name, "memo": memo, "missing": missing}

    def _var(self, task_vars, name, default):
        if name not in task_vars:
            return default
        return self._templar.template(task_vars[name])

    def _configure_module(self, module_name, module_args, task_vars):
        if self._rocket_thin is None:
            return super()._configure_module(module_name, module_args, task_vars)
        real = self._shared_loader_obj
        self._shared_loader_obj = _ThinLoaders(real)
        try:
            built, path = super()._configure_module(THIN_NAME, module_args, task_vars)
        finally:
            self._shared_loader_obj = real
        direct = direct_program(self._rocket_thin, module_args)
        if direct is None or not dataclasses.is_dataclass(built) or getattr(built, "module_style", "") != "new":
            return built, path
        self._rocket_direct = direct
        return dataclasses.replace(built, b_module_data=direct["program"]), path

    def _compute_environment_string(self, raw_environment_out=None):
        # The direct program carries what the thin payload reads from these (Ansible asks for
        # the environment after the payload is configured), so it gets the task's own alone.
        if self._rocket_thin is None or self._rocket_direct is not None:
            return super()._compute_environment_string(raw_environment_out)
        env: "dict[str, str]" = {}
        super()._compute_environment_string(env)
        env.update({thin_module.ENV_LIBRARY: self._rocket_thin["library"],
                    thin_module.ENV_SHA256: self._rocket_thin["sha256"],
                    thin_module.ENV_MODULE: self._rocket_thin["module"]})
        if isinstance(raw_environment_out, dict):
            raw_environment_out.clear()
            raw_environment_out.update(env)
        return self._connection._shell.env_prefix(**env)


class _ThinModuleLoader:
    """Answers the one lookup _configure_module makes with thin_module.py."""

    def find_plugin_with_context(self, name, mod_type="", collection_list=None):
        class Found:
            resolved = True
            redirect_list: "list[str]" = []
            plugin_resolved_path = thin_module.__file__

        return Found()


class _ThinLoaders:
    def __init__(self, real) -> None:
        self._real = real
        self.module_loader = _ThinModuleLoader()

    def __getattr__(self, name):
        return getattr(self._real, name)


PROGRAM_TEXT = """import json
ns = {"__name__": "appc_rocket_direct"}
exec(compile(%r, "thin_module.py", "exec"), ns)
ns["direct"](json.loads(%r))
"""
PATH_UNSAFE = ("~", "$")  # what a path-typed option would expand on the host, as the host's user


def direct_program(plan: "dict[str, str]", module_args: "dict") -> "dict | None":
    """The direct path's program for this task, with the arguments validated here as the module
    would validate them; None when the module itself must see them (thin_module.DIRECT_MODULES)."""
    if plan["module"] not in thin_module.DIRECT_MODULES:
        return None
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    spec = importlib.import_module("ansible_collections.appc.rocket.plugins.modules." + plan["module"]).spec()
    internal = {k[len("_ansible_"):]: v for k, v in module_args.items() if k.startswith("_ansible_")}
    params = {k: v for k, v in module_args.items() if not k.startswith("_ansible_")}
    if internal.get("ignore_unknown_opts") or (internal.get("check_mode") and not spec.get("supports_check_mode")):
        return None
    if _host_dependent(spec["argument_spec"], params):
        return None
    kwargs = {k: spec.get(k) for k in ("mutually_exclusive", "required_together", "required_one_of",
                                       "required_if", "required_by")}
    checked = ArgumentSpecValidator(spec["argument_spec"], **kwargs).validate(params)
    if checked.error_messages or checked._warnings or checked._deprecations:
        return None
    validated = checked.validated_parameters
    no_log_values = checked._no_log_values
    log = None if internal.get("no_log") else _log_line(plan["module"], internal, spec["argument_spec"],
                                                        validated, no_log_values)
    if log is False:
        return None
    payload = {"module": plan["module"], "library": plan["library"], "sha256": plan["sha256"], "params": validated,
               "check_mode": bool(internal.get("check_mode")), "diff": bool(internal.get("diff")), "log": log}
    try:
        text = json.dumps(payload)
    except (TypeError, ValueError):
        return None
    with open(thin_module.__file__) as f:
        source = f.read()
    return {"program": (PROGRAM_TEXT % (source, text)).encode(), "params": validated, "no_log_values": no_log_values,
            # ansible-core 2.21 asks for the invocation (INJECT_INVOCATION); before, it was always there
            "invocation": bool(internal.get("inject_invocation", True))}


def _host_dependent(spec: "dict", params: "dict") -> bool:
    """Whether validating here could give another value than on the host: an option with a
    ``fallback`` (read from the host's environment), or a value of a path-typed option (at any
    depth, by any alias) that holds ~ or $."""
    names = set()
    fallback = []

    def collect(options: "dict") -> None:
        for name, option in options.items():
            if option.get("fallback"):
                fallback.append(name)
            if option.get("type") == "path" or option.get("elements") == "path":
                names.add(name)
                names.update(option.get("aliases") or ())
            if option.get("options"):
                collect(option["options"])

    collect(spec)
    if fallback:
        return True

    def walk(value: object) -> bool:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in names and any(c in json.dumps(item, default=str) for c in PATH_UNSAFE):
                    return True
                if walk(item):
                    return True
        elif isinstance(value, (list, tuple)):
            return any(walk(item) for item in value)
        elif isinstance(value, str) and value.lstrip().startswith(("{", "[")):
            return any(c in value for c in PATH_UNSAFE)  # a JSON string that becomes options later
        return False

    return walk(params)


def _log_line(module: str, internal: "dict", spec: "dict", params: "dict", no_log_values: "set") -> "dict | bool":
    """AnsibleModule's "Invoked with ..." line for the host's syslog; False where it would warn."""
    from ansible.module_utils.basic import PASSWORD_MATCH, heuristic_log_sanitize
    from ansible.module_utils.common.parameters import remove_values

    args = {}
    for name, value in params.items():
        no_log = spec.get(name, {}).get("no_log")
        if no_log is None and PASSWORD_MATCH.search(name):
            return False  # AnsibleModule warns "Module did not set no_log": let it
        if no_log:
            args[name] = "NOT_LOGGING_PARAMETER"
            continue
        text = value if isinstance(value, (str, bytes)) else str(value)
        args[name] = heuristic_log_sanitize(text.encode("utf-8") if isinstance(text, str) else text, no_log_values)
    words = ["%s=%s" % (k, v.decode("utf-8", "replace") if isinstance(v, bytes) else v) for k, v in args.items()]
    message = "Invoked with %s" % " ".join(words) if words else "Invoked"
    if internal.get("target_log_info"):
        message = "%s %s" % (internal["target_log_info"], message)
    return {"ident": "ansible-%s" % internal.get("module_name", module),
            "facility": str(internal.get("syslog_facility") or "LOG_USER"),
            "message": remove_values(message, no_log_values)}


def direct_result(result: "dict", direct: "dict") -> "dict":
    """What AnsibleModule's exit adds to a result: ``invocation`` (when asked), and no_log values hidden
    (the top level's booleans and None kept, as it keeps them)."""
    from ansible.module_utils.common.parameters import remove_values

    if not direct["invocation"]:
        result.pop("invocation", None)
    elif "invocation" not in result:
        result["invocation"] = {"module_args": direct["params"]}
    kept = {k: v for k, v in result.items() if v is None or isinstance(v, bool)}
    clean = remove_values(result, direct["no_log_values"])
    clean.update(kept)
    return clean


def expected_library() -> "dict[str, str] | None":
    """The version directory and SHA-256 of the zip the runtime role would install from this
    collection, built once per source state (the files' sizes, times and inodes); None when
    this installation has no builder."""
    import importlib.util

    if not os.path.isfile(PROGRAM):
        return None
    spec = importlib.util.spec_from_file_location("appc_rocket_pods_program", PROGRAM)
    if spec is None or spec.loader is None:
        return None
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)
    state = []
    for path in [PROGRAM, os.path.join(ROOT, "MANIFEST.json"), os.path.join(ROOT, "galaxy.yml")] + [
            p for p, dummy in program.sources(ROOT)]:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        state.append([path, st.st_size, st.st_mtime_ns, st.st_ino])
    key = hashlib.sha256(json.dumps([ROOT, state]).encode()).hexdigest()[:32]
    # Ansible's local temporary directory is made per run inside a directory of this user's
    # (~/.ansible/tmp); kept there, the digest survives the run. Only this user can write
    # it (else the run's own directory is used): what it says is what the hosts are held to.
    base = _cache_dir() or C.DEFAULT_LOCAL_TMP
    cache = os.path.join(base, "appc-rocket-library-" + key)
    try:
        with open(cache) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    data = program.build(ROOT)
    digest = hashlib.sha256(data).hexdigest()
    out = {"version": "%s-%s" % (program.version(ROOT), digest[:12]), "sha256": digest}
    tmp = "%s.%d" % (cache, os.getpid())
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, cache)
    if len(_cached(base)) > 8:  # other source states (an edited checkout, other copies): keep a few
        for name in sorted(_cached(base), key=lambda n: _mtime(os.path.join(base, n)))[:-8]:
            try:
                os.unlink(os.path.join(base, name))
            except OSError:
                pass
    return out


def _cache_dir() -> "str | None":
    """Where what outlives a playbook run is kept: the directory Ansible makes each run's local
    temporary directory in (~/.ansible/tmp), when only this user can write it."""
    base = os.path.dirname(C.DEFAULT_LOCAL_TMP)
    return base if _private(base) else None


def _private(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _cached(base: str) -> "list[str]":
    return [n for n in os.listdir(base) if n.startswith("appc-rocket-library-") and "." not in n]


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _remember(memo: str, reason: str) -> None:
    tmp = "%s.%d" % (memo, os.getpid())
    with open(tmp, "w") as f:
        f.write(reason + "\n")
    os.replace(tmp, memo)


def _forget_old(base: str) -> None:
    now = time.time()
    for name in os.listdir(base):
        path = os.path.join(base, name)
        if name.startswith("appc-rocket-thin-") and now - _mtime(path) > MISSING_FOR:
            try:
                os.unlink(path)
            except OSError:
                pass


def _boolean(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "n", "f", "")
    return bool(value)
