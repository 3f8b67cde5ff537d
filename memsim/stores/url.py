"""Store URLs (`file:///path`, `s3://bucket/prefix`, `memory://name`) and S3 credentials.

S3 settings come, in order, from the URL's query (`?endpoint=...&region=...&timeout=...`),
the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, `AWS_REGION` / `AWS_DEFAULT_REGION`,
`AWS_PROFILE`), and the standard AWS files (`~/.aws/credentials`, `~/.aws/config`, or
`AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`). Credentials never go into a URL, a message
or a log: `redact` scrubs them from any text that might carry them.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from memsim.errors import CREDENTIALS_ADVICE, InputError, scrub_userinfo

SCHEMES = ("file", "s3", "memory")
S3_OPTIONS = ("endpoint", "region", "timeout", "retries")


@dataclass(frozen=True)
class S3Settings:
    """Where an S3 bucket is and how to sign for it (secrets kept out of repr)."""

    bucket: str
    prefix: str
    endpoint: str | None
    region: str
    timeout_s: float
    retries: int
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.access_key_id, self.secret_access_key, self.session_token)
                if s]


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL; `display` is safe to print."""

    scheme: str
    path: str  # file: a filesystem path; s3: bucket/prefix; memory: the name
    query: dict[str, str]

    @property
    def display(self) -> str:
        if self.scheme == "file":
            return f"file://{self.path}"
        extra = f" (endpoint {self.query['endpoint']})" if "endpoint" in self.query else ""
        return f"{self.scheme}://{self.path}{extra}"


def parse_store_url(url: str, *, field_name: str = "store") -> StoreURL:
    """Parse and check a store URL; userinfo (credentials) in the URL is refused."""
    if isinstance(url, str) and has_credentials(url):
        raise InputError(CREDENTIALS_MESSAGE, field=field_name)
    if not isinstance(url, str) or "://" not in url:
        raise InputError(f"store {redact(repr(url))} must start with file://, s3:// or memory://",
                         field=field_name)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InputError(f"store scheme '{scheme}' is not supported (use file://, s3:// or "
                         "memory://)", field=field_name)
    if has_credentials(url):
        raise InputError(CREDENTIALS_MESSAGE, field=field_name)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    if scheme == "file":
        if query:
            raise InputError("file:// stores take no options", field=field_name)
        path = parts.netloc + parts.path
        if not path:
            raise InputError("file:// store needs a path, e.g. file:///data/bank",
                             field=field_name)
        return StoreURL("file", str(Path(path).expanduser().absolute()), {})
    if scheme == "memory":
        name = (parts.netloc + parts.path).strip("/") or "default"
        return StoreURL("memory", name, {})
    bucket = parts.netloc
    if not bucket:
        raise InputError("s3:// store needs a bucket, e.g. s3://my-bucket/bank", field=field_name)
    unknown = sorted(set(query) - set(S3_OPTIONS))
    if unknown:
        raise InputError(f"unknown s3 store option '{unknown[0]}' (known: "
                         f"{', '.join(S3_OPTIONS)})", field=field_name)
    prefix = parts.path.strip("/")
    if any(p in ("..", ".") for p in prefix.split("/")):
        raise InputError("s3 prefix must not contain '.' or '..' parts", field=field_name)
    return StoreURL("s3", f"{bucket}/{prefix}" if prefix else bucket, query)


def _aws_files(profile: str) -> tuple[dict[str, str], dict[str, str]]:
    """(credentials, config) sections of the AWS shared files for `profile`."""
    home = Path.home()
    cred_file = Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", home / ".aws" / "credentials"))
    conf_file = Path(os.environ.get("AWS_CONFIG_FILE", home / ".aws" / "config"))
    creds: dict[str, str] = {}
    conf: dict[str, str] = {}
    for path, section, out in ((cred_file, profile, creds),
                               (conf_file, profile if profile == "default"
                                else f"profile {profile}", conf)):
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path)
        except (configparser.Error, OSError, UnicodeDecodeError):
            raise InputError("cannot read the AWS configuration file", file=path) from None
        if parser.has_section(section):
            out.update(parser.items(section))
    return creds, conf


def s3_settings(url: StoreURL) -> S3Settings:
    """Resolve an s3:// URL against the environment and the AWS shared files."""
    env = os.environ
    creds, conf = _aws_files(env.get("AWS_PROFILE", "default"))
    bucket, _, prefix = url.path.partition("/")
    endpoint = (url.query.get("endpoint") or env.get("AWS_ENDPOINT_URL_S3")
                or env.get("AWS_ENDPOINT_URL") or conf.get("endpoint_url"))
    region = (url.query.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
              or conf.get("region") or "us-east-1")
    from memsim.units import UnitError, parse_time

    try:
        timeout = parse_time(url.query.get("timeout", "30 s"))
    except UnitError as exc:
        raise InputError(f"store option timeout: {exc}", field="store") from None
    if timeout <= 0:
        raise InputError("store option timeout must be positive", field="store")
    try:
        retries = int(url.query.get("retries", "8"))
    except ValueError:
        raise InputError("store option retries must be a whole number", field="store") from None
    if not 0 <= retries <= 100:
        raise InputError("store option retries must be between 0 and 100", field="store")
    key = env.get("AWS_ACCESS_KEY_ID") or creds.get("aws_access_key_id")
    secret = env.get("AWS_SECRET_ACCESS_KEY") or creds.get("aws_secret_access_key")
    token = env.get("AWS_SESSION_TOKEN") or creds.get("aws_session_token")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise InputError(f"S3 endpoint {endpoint!r} must start with http:// or https://",
                         field="store")
    return S3Settings(bucket=bucket, prefix=prefix, endpoint=endpoint, region=region,
                      timeout_s=timeout, retries=retries, access_key_id=key,
                      secret_access_key=secret, session_token=token)


CREDENTIALS_MESSAGE = f"store URL {CREDENTIALS_ADVICE}"


def has_credentials(url: str) -> bool:
    """Whether `url` (any scheme) carries userinfo, `scheme://KEY:SECRET@host/...`: an '@'
    anywhere before the query counts (a secret may contain '/'), unless the authority is
    empty (`file:///data/a@b`)."""
    head = url.split("?", 1)[0]
    if "://" not in head:
        return False
    scheme, _, rest = head.partition("://")
    return "@" in rest and not rest.startswith("/")  # file:///path@x has no userinfo


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """`text` with URL userinfo (`s3://KEY:SECRET@`) and every secret (of 4 characters or
    more) replaced by ***: the one scrubber for anything memsim prints."""
    text = scrub_userinfo(text)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
