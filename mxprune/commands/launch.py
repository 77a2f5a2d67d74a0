"""Launch a data-parallel job on MXNet's parameter-server KVStore: scheduler, servers and workers, then watch them.

    mxprune launch -n 2 -- mxprune prune --recipe recipes/quickstart.yaml --data-dir DATA
    mxprune launch -n 4 -s 2 --hostfile hosts.txt -- mxprune prune --recipe recipes/cifar_l2.yaml
    mxprune launch -n 2 --log-dir runs/logs -- python tools/prune.py --recipe recipes/quickstart.yaml

Without --hostfile every process runs on this machine over loopback; with it, servers and workers are spread
round-robin over the listed hosts (one per line, `#` comments) and started through ssh (passwordless, the same
checkout path and Python on every host), the scheduler runs here. Every process gets the DMLC_* environment,
workers also MXPRUNE_LOCAL_PROCS (workers on their host) and OMP_NUM_THREADS = cores of their host / workers on it
(unless OMP_NUM_THREADS is set here); scheduler and servers get one thread. The first process that fails stops the
whole job (exit code of that process), so does --deadline (exit code 124) and Ctrl-C (130); when the workers are
done, the scheduler and servers shut down by themselves.

The Horovod equivalent (Horovod installed separately: docs/distributed.md):
    horovodrun -np 2 -H localhost:2 --gloo --network-interface lo mxprune prune --recipe R.yaml
"""
import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

from mxprune import cli

LOOPBACK = '127.0.0.1'
MXNET_NODE = ['-c', 'import mxnet']  # a scheduler or server is MXNet imported under DMLC_ROLE: it serves, then exits
STOP_WAIT_S = 5.0


class LaunchError(Exception):
    """A bad argument or host file: one line on stderr, exit code 2."""


class Node:
    """One process of the job: its role, host, environment and, once started, its Popen."""

    def __init__(self, role: str, index: int, host: str, env: Dict[str, str], cmd: List[str]):
        self.role, self.index, self.host, self.env, self.cmd = role, index, host, env, cmd
        self.proc: Optional[subprocess.Popen] = None

    @property
    def label(self) -> str:
        where = '' if self.host == LOOPBACK else f' on {self.host}'
        return f'{self.role}{"" if self.role == "scheduler" else f" {self.index}"}{where}'


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_hostfile(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise LaunchError(f'--hostfile: {path} not found')
    hosts = []
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            text = line.split('#', 1)[0].strip()
            if not text:
                continue
            if len(text.split()) != 1:
                raise LaunchError(f'{path}: line {n}: {text!r} is not allowed; expected one host name or address')
            hosts.append(text)
    if not hosts:
        raise LaunchError(f'{path}: no hosts listed; expected one host name or address per line')
    return hosts


def route_address(host: str) -> str:
    """This machine's address on the route to `host` (what remote nodes use to reach the scheduler here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))  # no packet is sent: UDP connect only picks the route
        return s.getsockname()[0]


def plan(num_workers: int, num_servers: int, hosts: List[str], command: List[str], *, root_uri: str, port: int,
         python: str, base_env: Dict[str, str]) -> List[Node]:
    """The job's processes with their environments: scheduler here, servers and workers round-robin over hosts."""
    common = {'DMLC_PS_ROOT_URI': root_uri, 'DMLC_PS_ROOT_PORT': str(port), 'DMLC_NUM_SERVER': str(num_servers),
              'DMLC_NUM_WORKER': str(num_workers)}
    nodes = [Node('scheduler', 0, root_uri,
                  {**common, 'DMLC_ROLE': 'scheduler', 'DMLC_NODE_HOST': root_uri, 'OMP_NUM_THREADS': '1'},
                  [python, *MXNET_NODE])]
    for i in range(num_servers):
        host = hosts[i % len(hosts)]
        nodes.append(Node('server', i, host, {**common, 'DMLC_ROLE': 'server', 'DMLC_NODE_HOST': host,
                                              'OMP_NUM_THREADS': '1'}, [python, *MXNET_NODE]))
    per_host = {h: len(range(hosts.index(h), num_workers, len(hosts))) for h in hosts}
    for i in range(num_workers):
        host = hosts[i % len(hosts)]
        env = {**common, 'DMLC_ROLE': 'worker', 'DMLC_NODE_HOST': host, 'MXPRUNE_LOCAL_PROCS': str(per_host[host])}
        if base_env.get('OMP_NUM_THREADS'):
            env['OMP_NUM_THREADS'] = base_env['OMP_NUM_THREADS']
        elif host == LOOPBACK:
            env['OMP_NUM_THREADS'] = str(max(1, _cores() // per_host[host]))
        nodes.append(Node('worker', i, host, env, list(command)))
    return nodes


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def remote_command(node: Node, cwd: str) -> List[str]:
    """ssh with a pseudo-terminal (-tt): when the launcher stops the ssh client, the remote process gets SIGHUP."""
    env = ' '.join(f'{k}={shlex.quote(v)}' for k, v in sorted(node.env.items()))
    threads = ''
    if node.role == 'worker' and 'OMP_NUM_THREADS' not in node.env:  # split that host's cores, counted there
        k = node.env['MXPRUNE_LOCAL_PROCS']
        threads = f'OMP_NUM_THREADS=$(( $(nproc) / {k} > 0 ? $(nproc) / {k} : 1 )) '
    script = f'cd {shlex.quote(cwd)} && {threads}exec env {env} {shlex.join(node.cmd)}'
    return ['ssh', '-tt', '-o', 'BatchMode=yes', node.host, script]


def start(node: Node, cwd: str, log_dir: Optional[str]) -> None:
    out = None
    if log_dir:
        name = f'{node.role}{"" if node.role == "scheduler" else f"-{node.index}"}.log'
        out = open(os.path.join(log_dir, name), 'wb')
    if node.host == LOOPBACK or node.role == 'scheduler':
        cmd, env = node.cmd, {**os.environ, **node.env}
    else:
        cmd, env = remote_command(node, cwd), dict(os.environ)
    # a session of its own: stopping the job signals the node's whole process group, and only that
    node.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT if out else None, start_new_session=True)
    if out:
        out.close()


def stop(nodes: List[Node]) -> int:
    """SIGTERM to every running node's process group, SIGKILL after STOP_WAIT_S; returns how many were running."""
    running = [n for n in nodes if n.proc is not None and n.proc.poll() is None]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for n in running:
            if n.proc.poll() is None:
                try:
                    os.killpg(n.proc.pid, sig)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < end and any(n.proc.poll() is None for n in running):
            time.sleep(0.05)
    return len(running)


def _ended(rc: int) -> str:
    """How a process ended, as Popen reports it (a negative code is the signal that killed it)."""
    if rc < 0:
        try:
            return f'was killed by {signal.Signals(-rc).name}'
        except ValueError:
            return f'was killed by signal {-rc}'
    return f'exited with code {rc}'


def _exit_code(rc: int) -> int:
    return rc if rc > 0 else 128 - rc  # killed by signal s: 128 + s, as a shell reports it


def supervise(nodes: List[Node], deadline_s: float, grace_s: float, poll_s: float = 0.1) -> int:
    """Waits for the workers; the first failure, the deadline or Ctrl-C stops everything. Returns the exit code."""
    tic = time.monotonic()
    workers = [n for n in nodes if n.role == 'worker']
    try:
        while True:
            for n in nodes:
                rc = n.proc.poll()
                if rc is not None and rc != 0:
                    others = stop(nodes)
                    _say(f'error: {n.label} (pid {n.proc.pid}) {_ended(rc)}; stopped the other {others} '
                         f'process(es)')
                    return _exit_code(rc)
            if all(n.proc.poll() == 0 for n in workers):
                break
            if deadline_s and time.monotonic() - tic > deadline_s:
                others = stop(nodes)
                _say(f'error: deadline of {deadline_s:g} s passed; stopped {others} running process(es)')
                return 124
            time.sleep(poll_s)
        end = time.monotonic() + grace_s
        while time.monotonic() < end and any(n.proc.poll() is None for n in nodes):
            time.sleep(poll_s)
        left = stop(nodes)
        if left:
            _say(f'warning: {left} scheduler/server process(es) still ran {grace_s:g} s after the workers finished; '
                 f'stopped them')
        failed = next((n for n in nodes if n.proc.returncode != 0 and n.role != 'worker' and not left), None)
        if failed is not None:
            _say(f'error: {failed.label} exited with code {failed.proc.returncode} after the workers finished')
            return _exit_code(failed.proc.returncode)
    except KeyboardInterrupt:
        others = stop(nodes)
        _say(f'interrupted; stopped {others} process(es)')
        return 130
    servers = len(nodes) - len(workers) - 1
    _say(f'{len(workers)} worker(s) and {servers} server(s) finished in {time.monotonic() - tic:.1f} s')
    return 0


def _say(text: str) -> None:
    sys.stderr.write(f'launch: {text}\n')
    sys.stderr.flush()


def _on_term(signum, frame):
    raise KeyboardInterrupt


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('-n', '--num-workers', type=int, required=True, help='worker processes (the COMMAND)')
    p.add_argument('-s', '--num-servers', type=int, default=1, help='parameter servers')
    p.add_argument('--hostfile', help='hosts, one per line, reached by ssh (default: everything on this machine)')
    p.add_argument('--root-uri', help='address of this machine as the hosts reach it (default: from the route)')
    p.add_argument('--port', type=int, help='scheduler port (default: a free one)')
    p.add_argument('--deadline', type=float, default=24 * 3600.0, help='seconds before the job is stopped; 0: never')
    p.add_argument('--grace', type=float, default=30.0, help='seconds the scheduler/servers get to exit after the '
                                                             'workers')
    p.add_argument('--log-dir', help='write each process\'s output to <dir>/<role>-<i>.log instead of this terminal')
    p.add_argument('--python', default=sys.executable, help='interpreter for scheduler and servers')
    p.add_argument('command', nargs=argparse.REMAINDER, help='the worker command, after --')


def main(argv: Optional[List[str]] = None) -> int:
    args = cli.parse_command('launch', __doc__, arguments, argv, usage='%(prog)s -n WORKERS [options] -- COMMAND ...')
    # no bootstrap.start() here: the OMP_NUM_THREADS it would set in this process reaches every worker unsplit
    command = args.command[1:] if args.command[:1] == ['--'] else args.command
    try:
        if not command:
            raise LaunchError('no worker command; put it after --, e.g. -- mxprune prune --recipe R.yaml')
        if args.num_workers < 1 or args.num_servers < 1:
            raise LaunchError(f'-n {args.num_workers} -s {args.num_servers}: expected at least 1 worker and 1 server')
        hosts = read_hostfile(args.hostfile) if args.hostfile else [LOOPBACK]
        root = args.root_uri or (LOOPBACK if hosts == [LOOPBACK] else route_address(hosts[0]))
        port = args.port or free_port(LOOPBACK if root == LOOPBACK else '')
        if args.log_dir:
            os.makedirs(args.log_dir, exist_ok=True)
    except (LaunchError, OSError) as e:
        sys.stderr.write(f'launch: error: {e}\n')
        return 2
    nodes = plan(args.num_workers, args.num_servers, hosts, command, root_uri=root, port=port, python=args.python,
                 base_env=dict(os.environ))
    signal.signal(signal.SIGTERM, _on_term)
    cwd = os.getcwd()
    try:
        for n in nodes:
            start(n, cwd, args.log_dir)
    except (OSError, KeyboardInterrupt) as e:
        stop(nodes)
        sys.stderr.write(f'launch: error: could not start {n.label}: {e}\n')
        return 2
    threads = next((n.env.get('OMP_NUM_THREADS', 'per host') for n in nodes if n.role == 'worker'), '?')
    _say(f'{args.num_workers} worker(s), {args.num_servers} server(s), scheduler {root}:{port}, '
         f'OMP_NUM_THREADS={threads} per worker')
    return supervise(nodes, args.deadline, args.grace)

