"""What a Dockerfile copies from its context: table-driven over real-world Dockerfiles."""

from __future__ import annotations

import pytest

from opswatch.core.dockerfile import CopySource, DockerIgnore, read_dockerfile

# The seed's gateway: the compose file builds it with `context: ..` (the repository root).
SEED_GATEWAY = """\
# syntax=docker/dockerfile:1.7
FROM node:20-slim AS build
WORKDIR /app
COPY integrations/mcp/servers/coda/src/package.json ./
COPY integrations/mcp/servers/coda/src/package-lock.json \\
     integrations/mcp/servers/coda/src/tsconfig.json ./
RUN npm ci
COPY integrations/mcp/servers/coda/src/ ./src/
RUN npm run build

FROM node:20-slim
WORKDIR /app
COPY --from=build /app/dist ./dist
COPY --from=build /app/node_modules ./node_modules
CMD ["node", "dist/index.js"]
"""

# A Go service in the shape of the official multi-stage examples.
GO_SERVICE = """\
FROM golang:1.22 AS builder
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN CGO_ENABLED=0 go build -o /out/app ./cmd/app
FROM gcr.io/distroless/static
COPY --from=builder /out/app /app
ENTRYPOINT ["/app"]
"""

# A Python app: flags, the JSON form, a glob, a comment inside a continuation, ADD of a URL.
PYTHON_APP = """\
FROM python:3.12-slim
ARG APP_HOME=/srv/app
WORKDIR $APP_HOME
COPY --chown=app:app --chmod=0644 ["requirements.txt", "constraints*.txt", "./"]
RUN pip install -r requirements.txt \\
    # pinned by the constraints file
    -c constraints.txt
COPY --link --chown=app:app app/ ./app/
ADD https://example.com/tini /tini
ADD --checksum=sha256:abc vendor/blob.tar.gz /opt/
COPY ./scripts/*.sh /usr/local/bin/
"""

# BuildKit heredocs: a RUN body and an inline COPY source must not read as instructions.
HEREDOCS = """\
# syntax=docker/dockerfile:1
FROM alpine
RUN <<EOF
COPY not/an/instruction /x
echo hi
EOF
COPY <<-CONF /etc/app.conf
\tCOPY neither /y
\tCONF
COPY real/file.txt /z
"""

# ARG-dependent sources are reported, never guessed; a path out of the context too.
ARGS = """\
FROM alpine
ARG SERVICE=coda
COPY integrations/${SERVICE}/src ./src
COPY $CONFIG_DIR/app.toml /etc/
COPY ../outside /x
COPY docs/ops/runbooks/ /usr/share/nginx/html/
"""

# The Windows escape directive: backticks continue lines, backslashes are path characters.
ESCAPE = """\
# escape=`
FROM mcr.microsoft.com/windows/servercore
COPY app\\config.json `
     C:\\app\\
copy --exclude=*.md docs/ /docs/
"""


def paths(text: str) -> list[tuple[str, str, int]]:
    return [(s.instruction, s.path, s.line) for s in read_dockerfile(text).sources]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            SEED_GATEWAY,
            [
                ("COPY", "integrations/mcp/servers/coda/src/package.json", 4),
                ("COPY", "integrations/mcp/servers/coda/src/package-lock.json", 5),
                ("COPY", "integrations/mcp/servers/coda/src/tsconfig.json", 5),
                ("COPY", "integrations/mcp/servers/coda/src", 8),
            ],
        ),
        (GO_SERVICE, [("COPY", "go.mod", 3), ("COPY", "go.sum", 3), ("COPY", "", 5)]),
        (
            PYTHON_APP,
            [
                ("COPY", "requirements.txt", 4),
                ("COPY", "constraints*.txt", 4),
                ("COPY", "app", 8),
                ("ADD", "vendor/blob.tar.gz", 10),
                ("COPY", "scripts/*.sh", 11),
            ],
        ),
        (HEREDOCS, [("COPY", "real/file.txt", 10)]),
        (ARGS, [("COPY", "docs/ops/runbooks", 6)]),
        (ESCAPE, [("COPY", "app\\config.json", 3), ("COPY", "docs", 5)]),
        ("", []),
        ("FROM scratch\nCOPY\nCOPY onlyone\n", []),
    ],
    ids=["seed", "go", "python", "heredocs", "args", "escape", "empty", "malformed"],
)
def test_sources(text: str, expected: list[tuple[str, str, int]]) -> None:
    assert paths(text) == expected


def test_arg_dependent_and_escaping_sources_are_reported_not_guessed() -> None:
    found = read_dockerfile(ARGS).not_analysed
    assert [(n.line, n.reason) for n in found] == [
        (3, "integrations/${SERVICE}/src: depends on ARG or ENV"),
        (4, "$CONFIG_DIR/app.toml: depends on ARG or ENV"),
        (5, "../outside: outside the build context"),
    ]


def test_flags_and_written_form_are_kept_for_messages() -> None:
    (first, *_rest) = read_dockerfile(SEED_GATEWAY).sources
    assert first.label == "COPY integrations/mcp/servers/coda/src/package.json"
    (docs,) = [s for s in read_dockerfile(ESCAPE).sources if s.path == "docs"]
    assert docs.excludes == ("*.md",)


def source(path: str, excludes: tuple[str, ...] = ()) -> CopySource:
    return CopySource("COPY", path, path, 1, excludes)


@pytest.mark.parametrize(
    ("copy", "relative", "copied"),
    [
        (source("integrations/coda/src/package.json"), "integrations/coda/src/package.json", True),
        (source("integrations/coda/src/package.json"), "integrations/coda/src/other.json", False),
        (source("integrations/coda/src"), "integrations/coda/src/lib/a.ts", True),
        (source("integrations/coda/src"), "integrations/coda/srcs/a.ts", False),
        (source(""), "anything/at/all", True),
        (source("scripts/*.sh"), "scripts/run.sh", True),
        (source("scripts/*.sh"), "scripts/deep/run.sh", False),
        (source("scripts/*.sh"), "scripts/run.py", False),
        (source("conf*"), "config/app/x.toml", True),  # a matched folder brings its contents
        (source("docs", ("*.md",)), "docs/guide.md", False),
        (source("docs", ("*.md",)), "docs/logo.png", True),
    ],
)
def test_which_context_files_a_source_copies(copy: CopySource, relative: str, copied: bool) -> None:
    assert copy.copies(relative) is copied


@pytest.mark.parametrize(
    ("relative", "excluded"),
    [
        ("node_modules/x/index.js", True),
        ("integrations/coda/node_modules/x.js", True),
        ("README.md", True),
        ("docs/guide.md", False),  # `*.md` is anchored at the context root, unlike .gitignore
        ("docs/ops/CHANGELOG.md", True),
        ("logs/app.log", True),
        ("logs/keep.log", False),
        ("src/app.ts", False),
    ],
)
def test_dockerignore(relative: str, excluded: bool) -> None:
    ignore = DockerIgnore(
        [
            "# comment",
            "",
            "node_modules",
            "**/node_modules",
            "*.md",
            "/docs/ops/CHANGELOG.md",
            "logs/",
            "!logs/keep.log",
        ]
    )
    assert ignore.excludes(relative) is excluded


def test_an_empty_dockerignore_excludes_nothing() -> None:
    assert not DockerIgnore([]).excludes("anything")
