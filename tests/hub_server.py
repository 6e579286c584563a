""" A small in-memory Hugging Face Hub for the hub tests: the part of the protocol huggingface_hub uses to publish
and download model repositories

Standard library only (plus PyYAML, a timm dependency, to validate model card metadata). Point huggingface_hub at it
with ``HF_ENDPOINT=<server.url>`` (read when huggingface_hub is imported) and ``HF_HUB_DISABLE_XET=1`` (uploads then
use the plain commit API: no Xet storage here). Bound to 127.0.0.1 on an ephemeral port; request bodies are bounded;
``stop()`` (or leaving the ``with`` block) shuts it down.

Endpoints (model repositories ``<org>/<name>`` only):

* ``POST /api/repos/create``: ``{"name", "organization", "visibility"|"private"}``, 409 if it exists. A new
  repository has one commit holding ``.gitattributes``, on branch ``main``.
* ``GET /api/models/<repo>[/revision/<rev>]``: repository info (``id``, ``sha``, ``private``, ``siblings``).
* ``GET /api/models/<repo>/refs``, ``POST /api/models/<repo>/branch/<branch>`` (``{"startingPoint"}``, 409 if it
  exists).
* ``POST /api/models/<repo>/preupload/<rev>``: every file is uploaded "regular" (inline in the commit, no LFS), with
  the git blob id of the file already at that path.
* ``POST /api/models/<repo>/commit/<rev>``: ndjson (header, ``file``, ``deletedFile``, ``deletedFolder``); a
  ``parentCommit`` that is not the branch head gives 412. Applied atomically.
* ``POST /api/validate-yaml``: parses the card's front matter.
* ``POST /api/models/<repo>/paths-info/<rev>``: ``paths`` (form data) -> the files among them, with ``lfs`` (sha256 and
  size) for the paths ``.gitattributes`` sends to LFS (``*.safetensors``, ``*.bin``), as the Hub reports them.
* ``HEAD|GET /<repo>/resolve/<rev>/<path>``: ``X-Repo-Commit``, ``ETag`` (the git blob id), ``Content-Length``.

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) as the Hub's do, 404s for a
missing entry carry ``X-Repo-Commit``. Writes need ``Authorization: Bearer <token>`` (401 otherwise); a private
repository reads as missing without it. ``fail_next('commit')`` makes the next commit answer 500 without changing
anything; ``seed()`` writes a repository directly; ``swap_after_download()`` commits new files once a file has been
served (a push that lands between two downloads); ``requests`` logs ``(method, path)``.
"""
import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

__all__ = ['HubServer']

MAX_BODY = 64 * 1024 * 1024
_REPO = r'(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)'
_GITATTRIBUTES = b'*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n'
_LFS_SUFFIXES = ('.safetensors', '.bin')  # what _GITATTRIBUTES sends to LFS


def git_blob_id(content: bytes) -> str:
    """The git object id of a blob, the ETag of a regular (non-LFS) file on the Hub."""
    return hashlib.sha1(b'blob %d\0' % len(content) + content).hexdigest()


class HubError(Exception):
    def __init__(self, status: int, message: str, code: Optional[str] = None, commit: Optional[str] = None,
                 **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.commit, self.extra = status, message, code, commit, extra


@dataclass
class Commit:
    oid: str
    parent: Optional[str]
    files: Dict[str, bytes]
    message: str


@dataclass
class Repo:
    private: bool
    commits: Dict[str, Commit] = field(default_factory=dict)
    branches: Dict[str, str] = field(default_factory=dict)


class HubServer:
    """The in-memory Hub (see the module docstring).

    Args:
        token: The one valid write token.
    """

    def __init__(self, token: str):
        self.token = token
        self.repos: Dict[str, Repo] = {}
        self.requests: List[Tuple[str, str]] = []
        self._failures: Dict[str, List[int]] = {}
        self._swaps: Dict[Tuple[str, str], Dict[str, bytes]] = {}
        self._lock = threading.Lock()
        self._count = 0
        self._httpd = ThreadingHTTPServer(('127.0.0.1', 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f'http://{host}:{port}'

    def start(self) -> 'HubServer':
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs=dict(poll_interval=0.05),
                                        name='hub-server', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------------------------------ test controls

    def fail_next(self, endpoint: str, status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` requests to ``endpoint`` with ``status``, changing nothing.

        Endpoints: 'create', 'validate-yaml', 'info', 'refs', 'branch', 'preupload', 'commit', 'resolve'.
        """
        with self._lock:
            self._failures.setdefault(endpoint, []).extend([status] * times)

    def seed(self, repo_id: str, files: Dict[str, bytes], branch: str = 'main', private: bool = False) -> str:
        """Create (or commit to) a repository directly; returns the commit id."""
        with self._lock:
            repo = self.repos.get(repo_id) or self._create(repo_id, private)
            if branch not in repo.branches:
                repo.branches[branch] = repo.branches['main']
            head = repo.commits[repo.branches[branch]]
            return self._commit(repo, branch, dict(head.files, **files), f'seed {sorted(files)}')

    def swap_after_download(self, repo_id: str, path: str, files: Dict[str, bytes]) -> None:
        """Once ``path`` of ``repo_id`` has been served (GET), commit ``files`` to its main branch."""
        with self._lock:
            self._swaps[(repo_id, path)] = files

    def files(self, repo_id: str, revision: str = 'main') -> Dict[str, bytes]:
        """The files of a repository at a branch or commit."""
        with self._lock:
            repo = self.repos[repo_id]
            return dict(repo.commits[repo.branches.get(revision, revision)].files)

    def state(self) -> Dict[str, Dict[str, str]]:
        """Branch heads of every repository, to check that nothing changed."""
        with self._lock:
            return {repo_id: dict(repo.branches) for repo_id, repo in self.repos.items()}

    # ----------------------------------------------------------------------------------------------- internals

    def _create(self, repo_id: str, private: bool) -> Repo:
        repo = self.repos[repo_id] = Repo(private=private)
        repo.branches['main'] = None
        self._commit(repo, 'main', {'.gitattributes': _GITATTRIBUTES}, 'initial commit')
        return repo

    def _commit(self, repo: Repo, branch: str, files: Dict[str, bytes], message: str) -> str:
        self._count += 1
        parent = repo.branches.get(branch)
        oid = hashlib.sha1(f'{parent}\n{message}\n{self._count}'.encode() + b''.join(
            git_blob_id(c).encode() + p.encode() for p, c in sorted(files.items()))).hexdigest()
        repo.commits[oid] = Commit(oid=oid, parent=parent, files=files, message=message)
        repo.branches[branch] = oid
        return oid

    def _take_failure(self, endpoint: str) -> Optional[int]:
        with self._lock:
            pending = self._failures.get(endpoint)
            return pending.pop(0) if pending else None

    def _repo(self, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HubError(404, 'Repository not found', 'RepoNotFound')
        return repo

    @staticmethod
    def _resolve(repo: Repo, revision: str) -> str:
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.commits:
            return revision
        raise HubError(404, f'Invalid rev id: {revision}', 'RevisionNotFound')

    # ---------------------------------------------------------------------------------------------- endpoints

    def handle(self, method: str, path: str, body: bytes, authorized: bool, base: str):
        """One request -> (status, headers, body)."""
        routes = (
            ('POST', r'/api/repos/create', 'create', self._api_create),
            ('POST', r'/api/validate-yaml', 'validate-yaml', self._api_validate_yaml),
            ('GET', rf'/api/models/{_REPO}/refs', 'refs', self._api_refs),
            ('POST', rf'/api/models/{_REPO}/branch/(?P<branch>[^/]+)', 'branch', self._api_branch),
            ('POST', rf'/api/models/{_REPO}/preupload/(?P<rev>[^/]+)', 'preupload', self._api_preupload),
            ('POST', rf'/api/models/{_REPO}/commit/(?P<rev>[^/]+)', 'commit', self._api_commit),
            ('POST', rf'/api/models/{_REPO}/paths-info/(?P<rev>[^/]+)', 'paths-info', self._api_paths_info),
            ('GET', rf'/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?', 'info', self._api_info),
            ('GET', rf'/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)', 'resolve', self._resolve_file),
            ('HEAD', rf'/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)', 'resolve', self._resolve_file),
        )
        for route_method, pattern, endpoint, fn in routes:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                status = self._take_failure(endpoint)
                if status is not None:
                    return status, {}, json.dumps({'error': 'Internal Error (injected by the test)'}).encode()
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                with self._lock:
                    return fn(body=body, authorized=authorized, base=base, method=method, **params)
        return 404, {}, json.dumps({'error': f'Not found: {method} {path}'}).encode()

    def _require_auth(self, authorized: bool) -> None:
        if not authorized:
            raise HubError(401, 'Invalid credentials in Authorization header')

    def _api_create(self, body, authorized, base, **_):
        self._require_auth(authorized)
        payload = json.loads(body)
        if payload.get('type', 'model') != 'model':
            raise HubError(400, 'Only model repositories are served here')
        repo_id = f'{payload["organization"]}/{payload["name"]}' if payload.get('organization') else None
        if repo_id is None or not re.fullmatch(_REPO, repo_id):
            raise HubError(400, f'Invalid repository name {payload.get("name")!r}')
        if repo_id in self.repos:
            raise HubError(409, 'You already created this model repo', url=f'{base}/{repo_id}')
        private = payload.get('visibility') == 'private' or bool(payload.get('private'))
        self._create(repo_id, private)
        return 200, {}, json.dumps({'url': f'{base}/{repo_id}', 'name': repo_id, 'id': repo_id}).encode()

    def _api_validate_yaml(self, body, **_):
        content = json.loads(body).get('content', '')
        match = re.match(r'---\n(.*?)\n---\n', content, re.S)
        errors = []
        if match is None:
            errors.append({'message': 'no YAML front matter'})
        else:
            try:
                meta = yaml.safe_load(match.group(1))
                if not isinstance(meta, dict):
                    errors.append({'message': 'metadata is not a mapping'})
                elif not isinstance(meta.get('model-index', []), list):
                    errors.append({'message': '"model-index" must be a list'})
            except yaml.YAMLError as e:
                errors.append({'message': f'invalid YAML: {e}'})
        status = 400 if errors else 200
        return status, {}, json.dumps({'errors': errors, 'warnings': []}).encode()

    def _api_refs(self, repo, authorized, **_):
        r = self._repo(repo, authorized)
        branches = [dict(name=b, ref=f'refs/heads/{b}', targetCommit=oid) for b, oid in sorted(r.branches.items())]
        return 200, {}, json.dumps(dict(branches=branches, tags=[], converts=[], pullRequests=[])).encode()

    def _api_branch(self, repo, branch, body, authorized, **_):
        self._require_auth(authorized)
        r = self._repo(repo, authorized)
        if branch in r.branches:
            raise HubError(409, f'Reference already exists: refs/heads/{branch}')
        start = (json.loads(body) if body else {}).get('startingPoint') or 'main'
        r.branches[branch] = self._resolve(r, start)
        return 200, {}, b'{}'

    def _api_info(self, repo, authorized, rev='main', **_):
        r = self._repo(repo, authorized)
        oid = self._resolve(r, rev)
        info = dict(
            id=repo, modelId=repo, author=repo.split('/')[0], sha=oid, private=r.private, disabled=False, gated=False,
            tags=[], downloads=0, likes=0, siblings=[dict(rfilename=p) for p in sorted(r.commits[oid].files)])
        return 200, {}, json.dumps(info).encode()

    def _api_paths_info(self, repo, rev, body, authorized, **_):
        r = self._repo(repo, authorized)
        files = r.commits[self._resolve(r, rev)].files
        entries = []
        for path in parse_qs(body.decode()).get('paths', []):
            content = files.get(path)
            if content is None:
                continue  # the Hub lists the paths that exist
            entry = dict(type='file', path=path, size=len(content), oid=git_blob_id(content))
            if path.endswith(_LFS_SUFFIXES):
                entry['lfs'] = dict(oid=hashlib.sha256(content).hexdigest(), size=len(content), pointerSize=134)
            entries.append(entry)
        return 200, {}, json.dumps(entries).encode()

    def _api_preupload(self, repo, rev, body, authorized, **_):
        self._require_auth(authorized)
        r = self._repo(repo, authorized)
        if rev not in r.branches:
            raise HubError(404, f'Invalid rev id: {rev} (commits go to a branch)', 'RevisionNotFound')
        oid = r.branches[rev]
        existing = r.commits[oid].files
        files = [
            dict(path=f['path'], uploadMode='regular', shouldIgnore=False,
                 oid=git_blob_id(existing[f['path']]) if f['path'] in existing else None)
            for f in json.loads(body)['files']
        ]
        return 200, {}, json.dumps(dict(files=files, commitOid=oid)).encode()

    def _api_commit(self, repo, rev, body, authorized, base, **_):
        self._require_auth(authorized)
        r = self._repo(repo, authorized)
        if rev not in r.branches:
            raise HubError(404, f'Invalid rev id: {rev} (commits go to a branch)', 'RevisionNotFound')
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get('key') != 'header':
            raise HubError(400, 'The first line of a commit must be its header')
        header = lines[0]['value']
        head = r.branches[rev]
        parent = header.get('parentCommit')
        if parent is not None and not head.startswith(parent):
            raise HubError(412, 'A commit has happened since. Please refresh and try again.')
        files = dict(r.commits[head].files)
        for line in lines[1:]:
            key, value = line['key'], line['value']
            if key == 'file':
                files[value['path']] = base64.b64decode(value['content'])
            elif key == 'deletedFile':
                if value['path'] not in files:
                    raise HubError(404, "A file with this name doesn't exist", 'EntryNotFound')
                del files[value['path']]
            elif key == 'deletedFolder':
                files = {p: c for p, c in files.items() if not p.startswith(value['path'].rstrip('/') + '/')}
            else:
                raise HubError(400, f'Unsupported commit operation {key!r} (no LFS here: preupload said "regular")')
        oid = self._commit(r, rev, files, header.get('summary', ''))
        return 200, {}, json.dumps(dict(
            success=True, commitOid=oid, commitUrl=f'{base}/{repo}/commit/{oid}', hookOutput='',
            pullRequestUrl=None)).encode()

    def _resolve_file(self, repo, rev, path, method, authorized, **_):
        r = self._repo(repo, authorized)
        oid = self._resolve(r, rev)
        content = r.commits[oid].files.get(path)
        if content is None:
            raise HubError(404, 'Entry not found', 'EntryNotFound', commit=oid)
        headers = {'X-Repo-Commit': oid, 'ETag': f'"{git_blob_id(content)}"',
                   'Content-Type': 'application/octet-stream'}
        swap = self._swaps.pop((repo, path), None) if method == 'GET' else None
        if swap is not None:  # this response still carries the old content
            self._commit(r, 'main', dict(r.commits[r.branches['main']].files, **swap), f'swap {sorted(swap)}')
        return 200, headers, content


def _handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'
        timeout = 30  # seconds a connection may stay silent

        def _serve(self):
            path = urlsplit(self.path).path
            hub.requests.append((self.command, path))
            try:
                body = self._read_body()
                auth = self.headers.get('Authorization', '')
                authorized = auth == f'Bearer {hub.token}'
                host, port = self.server.server_address[:2]
                status, headers, payload = hub.handle(self.command, path, body, authorized, f'http://{host}:{port}')
            except HubError as e:
                status, payload = e.status, json.dumps({'error': e.message, **e.extra}).encode()
                headers = {'X-Error-Message': e.message}
                if e.code:
                    headers['X-Error-Code'] = e.code
                if e.commit:
                    headers['X-Repo-Commit'] = e.commit
            self.send_response(status)
            headers.setdefault('Content-Type', 'application/json')
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header('Content-Length', str(len(payload)))
            self.end_headers()
            if self.command != 'HEAD':
                self.wfile.write(payload)

        def _read_body(self) -> bytes:
            if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
                chunks, total = [], 0
                while True:
                    size = int(self.rfile.readline().split(b';')[0], 16)
                    total += size
                    if total > MAX_BODY:
                        raise HubError(413, 'Payload too large')
                    chunk = self.rfile.read(size)
                    self.rfile.readline()
                    if size == 0:
                        return b''.join(chunks)
                    chunks.append(chunk)
            length = int(self.headers.get('Content-Length') or 0)
            if length > MAX_BODY:
                self.close_connection = True
                raise HubError(413, 'Payload too large')
            return self.rfile.read(length) if length else b''

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format, *args):  # keep the test output clean; requests are in hub.requests
            pass

    return Handler
