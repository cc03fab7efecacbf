"""Build the stress set: corpora that no default was tuned on, one plain-text file each (one
sentence or paragraph per line, UTF-8), for bench/stress.py.

    python bench/stress_corpora.py --apt                      # the apt-get command for the real corpora
    python bench/stress_corpora.py bench/out/stress-corpora   # build all (skips what is built)
    python bench/stress_corpora.py DIR --only kjv repeat-paragraph
    python bench/stress_corpora.py DIR --list                 # names, shapes, what is built

Real corpora come from Debian packages (free, and repetitive in different ways: scripture's
formulae, a thesaurus that repeats each synset under every member, manual pages' boilerplate,
acronym lists, changelogs, source code's keywords and identifiers, and service logs: the real
samples that packages ship, resampled with their variable fields drawn anew, since they are
small). Adversarial corpora are built from ../shared/data/gcide_en.txt.gz: one paragraph repeated
10,000 times in the middle, lines sorted so one word dominates long stretches, one word per line,
100,000-word lines, a 50-word vocabulary.

Each corpus is written as ``DIR/NAME.txt`` with ``DIR/NAME.json`` beside it: source packages and
versions, license, words, lines and repetition measures (duplicate lines, longest run of identical
lines, top-1 token share under w2v_dist's tokenizer). Both are written to a temporary name and
renamed, so a file that exists is complete; building again skips it (``--force`` rebuilds).
Everything is deterministic for a ``--seed``.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import glob
import gzip
import hashlib
import heapq
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from w2v_dist.config import TokenizerConfig  # noqa: E402
from w2v_dist.corpus.tokenize import tokenize  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
GCIDE = DATA / "gcide_en.txt.gz"
VERSION = 1  # bump when a corpus's text changes, so that old files are not mistaken for new ones


class MissingSource(Exception):
    """A corpus cannot be built here: a Debian package or a shared data file is missing."""


@dataclass(frozen=True)
class Corpus:
    name: str
    shape: str
    build: Callable[["Context"], Iterable[str]]
    packages: tuple[str, ...] = ()  # Debian packages read (and the tools that render them)
    license: str = ""
    needs_gcide: bool = False


@dataclass
class Context:
    gcide: str
    seed: int
    notes: dict = field(default_factory=dict)  # anything a builder wants recorded in NAME.json


# ---------------------------------------------------------------------------------------------
# Helpers


_SPACES = re.compile(r"\s+")


def _clean(line: str) -> str:
    return _SPACES.sub(" ", line).strip()


def _paragraphs(lines: Iterable[str], hanging: bool = False) -> Iterator[str]:
    """Wrapped text -> one line per paragraph. A blank line ends a paragraph; with ``hanging``
    so does a line indented no deeper than the paragraph's first line (WordNet's numbered senses
    and their deeper-indented continuation lines), and a line at the margin (a headword) is a
    paragraph of its own."""
    buf: list[str] = []
    first_indent = 0
    for line in lines:
        text = line.strip()
        indent = len(line) - len(line.lstrip())
        if buf and (not text or (hanging and (indent <= first_indent or first_indent == 0))):
            yield _clean(" ".join(buf))
            buf = []
        if text:
            if not buf:
                first_indent = indent
            buf.append(text)
    if buf:
        yield _clean(" ".join(buf))


def _b64(s: str) -> int:
    """dictd's index numbers: base64 digits, most significant first."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for c in s:
        n = n * 64 + alphabet.index(c)
    return n


def _dict_entries(name: str) -> Iterator[str]:
    """Entries of a dictd database in file order, without its ``00-database-*`` header entries.
    ``.dict.dz`` is gzip with random-access extras, so gzip reads it whole."""
    base = f"/usr/share/dictd/{name}"
    with gzip.open(base + ".dict.dz", "rb") as f:
        data = f.read()
    spans = set()
    with open(base + ".index", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or parts[0].startswith(("00-database", "00database")):
                continue
            spans.add((_b64(parts[1]), _b64(parts[2])))
    for offset, length in sorted(spans):
        yield data[offset:offset + length].decode("utf-8", errors="replace")


def _gcide_lines(path: str) -> Iterator[str]:
    if not os.path.exists(path):
        raise MissingSource(f"{path} not found: the adversarial corpora are built from it "
                            f"(pass --gcide PATH; see ../shared/data/README.md)")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                yield line


def _take_words(lines: Iterable[str], words: int) -> list[str]:
    """Lines from the start until they hold ``words`` whitespace words."""
    out, n = [], 0
    for line in lines:
        out.append(line)
        n += len(line.split())
        if n >= words:
            break
    return out


def _tokens(lines: list[str]) -> list[list[str]]:
    """w2v_dist's own tokens of each line (lowercased, split on non-word characters), so that
    'one token per line' means one token to the trainer as well."""
    text = pa.array(lines, pa.string())
    toks, rows = tokenize(text, TokenizerConfig())
    out: list[list[str]] = [[] for _ in lines]
    for t, r in zip(toks.to_pylist(), rows.tolist()):
        out[r].append(t)
    return out


# ---------------------------------------------------------------------------------------------
# Real corpora (Debian packages)


def build_kjv(ctx: Context) -> Iterator[str]:
    """The King James Bible, a verse per line, reference stripped ("Ge1:1 In the beginning ...")."""
    _need_tool("bible", "bible-kjv")
    out = subprocess.run(["bible", "-f", "-l", "100000", "gen1:1-rev22:21"], check=True,
                         capture_output=True, text=True, encoding="utf-8").stdout
    for line in out.splitlines():
        ref, _, verse = line.partition(" ")
        if verse.strip():
            yield _clean(verse)


def _man_pages(packages: tuple[str, ...], lang: str = "") -> list[str]:
    files = []
    where = f"/usr/share/man/{lang + '/' if lang else ''}man[^/]+/[^/]+\\.gz"
    for pkg in packages:
        listed = subprocess.run(["dpkg-query", "-L", pkg], check=True, capture_output=True, text=True).stdout
        for path in listed.splitlines():
            # the pages of one language; links and .so stubs are other names for a page already listed
            if re.fullmatch(where, path) and not os.path.islink(path):
                with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                    if f.readline().startswith(".so "):
                        continue
                files.append(path)
    return sorted(files)


def build_manpages(ctx: Context, packages: tuple[str, ...] = ("manpages", "manpages-dev"),
                   lang: str = "") -> Iterator[str]:
    """Linux man-pages (sections 1-8, manpages + manpages-dev) rendered by groff with a line
    length of 2000 characters, so that a filled paragraph comes out as one line."""
    _need_tool("groff", "groff-base")
    files = _man_pages(packages, lang)
    ctx.notes["files"] = len(files)
    for path in files:
        with gzip.open(path, "rb") as f:
            source = f.read()
        # -t: tables through tbl; -rLL/-rHY: no wrapping, no hyphenation; -P-cbu: no overstrike
        # -Kutf-8: the translations are UTF-8, which groff would read as Latin-1 ("Ãbersetzung")
        encoding = ["-Kutf-8"] if lang else []
        out = subprocess.run(["groff", "-t", *encoding, "-Tutf8", "-man", "-rLL=2000n", "-rHY=0", "-P-c", "-P-b", "-P-u"],
                             input=source, capture_output=True).stdout.decode("utf-8", errors="replace")
        for line in out.splitlines():
            line = _clean(line)
            if line:
                yield line


def build_manpages_de(ctx: Context) -> Iterator[str]:
    """The German translations of manual pages (manpages-de: Linux man-pages and many tools'),
    rendered as build_manpages does: a language no default was tuned on, with umlauts and ß."""
    return build_manpages(ctx, ("manpages-de",), "de")


def build_manpages_ru(ctx: Context) -> Iterator[str]:
    """The Russian translations of manual pages (manpages-ru): Cyrillic, and a richly inflected
    language whose words spread over many forms."""
    return build_manpages(ctx, ("manpages-ru",), "ru")


def build_wordnet(ctx: Context) -> Iterator[str]:
    """WordNet 3.0 as the dictd database renders it: a headword, then numbered senses with
    glosses and [syn: ...] lists; a synset's gloss is repeated under each of its members."""
    for entry in _dict_entries("wn"):
        yield from _paragraphs(entry.splitlines(), hanging=True)


def build_computing_dicts(ctx: Context) -> Iterator[str]:
    """FOLDOC, the Jargon File and V.E.R.A. (acronym expansions: 'ABC Alpha Beta Corp (org., ...)'
    by the ten thousand), a paragraph per line."""
    for name in ("foldoc", "jargon", "vera"):
        for entry in _dict_entries(name):
            yield from _paragraphs(entry.splitlines())


def _python_doc_dir() -> str:
    dirs = sorted(glob.glob("/usr/share/doc/python3.*/html/_sources"),
                  key=lambda d: [int(x) for x in re.findall(r"python3\.(\d+)", d)])
    if not dirs:
        raise MissingSource("no /usr/share/doc/python3.*/html/_sources: stress corpus 'python-docs' needs "
                            "Debian package python3-doc: apt-get install -y python3-doc")
    return dirs[-1]


def build_python_docs(ctx: Context) -> Iterator[str]:
    """The Python documentation's reStructuredText sources (prose, directives and code samples)
    and its NEWS file (thousands of 'gh-NNNNN: Fix ...' entries), a paragraph per line."""
    src = _python_doc_dir()
    doc = os.path.dirname(os.path.dirname(src))
    ctx.notes["doc_dir"] = doc
    # python3-doc only depends on the versioned package that holds the text (python3.11-doc),
    # whose Debian updates change the corpus: record that one's version too
    owner = subprocess.run(["dpkg-query", "-S", src], capture_output=True, text=True)
    if owner.returncode == 0:
        holders = owner.stdout.split(":", 1)[0].split(", ")
        ctx.notes["doc_packages"] = package_versions(holders)[0]
    files = sorted(glob.glob(os.path.join(src, "**", "*.txt"), recursive=True))
    ctx.notes["files"] = len(files) + 1
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            yield from _paragraphs(f)
    with gzip.open(os.path.join(doc, "NEWS.gz"), "rt", encoding="utf-8", errors="replace") as f:
        yield from _paragraphs(f)


def _package_files(packages: Iterable[str], pattern: str) -> list[str]:
    """The regular files (not links, not directories) that ``packages`` install whose paths match
    ``pattern`` (a full match), sorted by path."""
    files = set()
    for pkg in packages:
        listed = subprocess.run(["dpkg-query", "-L", pkg], check=True, capture_output=True, text=True).stdout
        for path in listed.splitlines():
            if re.fullmatch(pattern, path) and os.path.isfile(path) and not os.path.islink(path):
                files.add(path)
    return sorted(files)


def _architecture() -> str:
    r = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "unknown"


# the packages of build_code: Python's standard library (split between -minimal and -stdlib) and
# the GNU C library's headers
CODE_PACKAGES = ("libpython3.11-minimal", "libpython3.11-stdlib", "libc6-dev")


def build_code(ctx: Context) -> Iterator[str]:
    """Source code: every ``.py`` file of the Python 3.11 standard library (libpython3.11-minimal
    and libpython3.11-stdlib, under /usr/lib/python3.11; not its test suite, which is another
    package), then every C header of the GNU C library (libc6-dev, under /usr/include), each set
    in path order. One line per source line: blank lines dropped, indentation and runs of
    whitespace collapsed, comments and docstrings kept as they are. A line of punctuation alone
    (``)``, ``};``) is a line here and no token to the trainer. The headers under
    /usr/include/<triplet>/ differ by architecture: NAME.json records it."""
    py = _package_files(CODE_PACKAGES[:2], r"/usr/lib/python3\.11/.+\.py")
    headers = _package_files(CODE_PACKAGES[2:], r"/usr/include/.+\.h")
    ctx.notes.update(python_files=len(py), c_headers=len(headers), architecture=_architecture())
    for path in py + headers:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = _clean(line)
                if line:
                    yield line


# the real log samples of build_logs: (package, the files of it read)
LOG_SOURCES = (
    ("fail2ban", r"/usr/lib/python3/dist-packages/fail2ban/tests/files/logs/.+"),
    ("python3-haproxy-log-analysis", r"/usr/lib/python3/dist-packages/haproxy/tests/files/.+\.log"),
    ("logstalgia", r"/usr/share/logstalgia/example\.log"),
)
LOG_WORDS = 700_000  # words of the logs corpus: its real lines, then resampled blocks up to this
LOG_BLOCK_LINES = 100  # a resampled block copies 1 to this many consecutive lines of one file

# The variable fields of a log line that build_logs draws anew, in order of precedence: a time of
# day (h:mm:ss, a fraction after '.' or ','; not inside a longer run of colons, a MAC or IPv6
# address, except after Apache's 'dd/Mon/yyyy:'), an IPv4 address, a hex string of 8 or more with
# a digit and a letter a-f, a run of 4 or more digits (except one that reads as a year, 1970-2037,
# or a date, yyyymmdd, or a time zone, ' +hhmm')
_LOG_FIELD = re.compile(
    r"(?P<time>(?:(?<=/\d{4}:)|(?<![\d:]))(?P<h>\d{1,2}):\d{2}:\d{2}(?:(?P<sep>[.,])(?P<frac>\d{1,6}))?(?![\d:]))"
    r"|(?P<ip>(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.]))"
    r"|(?P<hex>(?<![0-9A-Za-z])(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}(?![0-9A-Za-z]))"
    r"|(?P<num>(?<!\d)\d{4,}(?!\d))")


def _redraw_fields(line: str, rng: random.Random, clock: int) -> str:
    """``line`` with its variable fields (_LOG_FIELD) drawn anew with ``rng``, in the same shape
    (widths, case, separators); every time of day becomes ``clock`` (seconds since midnight)."""
    def draw(m: re.Match) -> str:
        text = m.group(0)
        if m.group("time"):
            h, rest = divmod(clock, 3600)
            out = f"{h:0{len(m.group('h'))}d}:{rest // 60:02d}:{rest % 60:02d}"
            if m.group("sep"):
                out += m.group("sep") + "".join(rng.choice("0123456789") for _ in m.group("frac"))
            return out
        if m.group("ip"):
            return ".".join(str(x) for x in (rng.randint(1, 223), rng.randint(0, 255),
                                             rng.randint(0, 255), rng.randint(1, 254)))
        if m.group("hex"):
            digits = "0123456789" + ("ABCDEF" if text.isupper() else "abcdef")
            return "".join(rng.choice(digits) for _ in text)
        if (len(text) == 4 and (1970 <= int(text) <= 2037 or m.string[max(m.start() - 2, 0):m.start()] in (" +", " -"))
                or len(text) == 8 and 1970 <= int(text[:4]) <= 2037 and 1 <= int(text[4:6]) <= 12
                and 1 <= int(text[6:]) <= 31):
            return text
        first = rng.choice("0123456789" if text[0] == "0" else "123456789")
        return first + "".join(rng.choice("0123456789") for _ in text[1:])
    return _LOG_FIELD.sub(draw, line)


def _log_files() -> list[tuple[str, list[str]]]:
    """The real log samples, (path, lines) in path order: lines decoded as UTF-8 (Latin-1 where a
    line is not), whitespace collapsed, blank lines and fail2ban's '#' lines (its test
    annotations, 'failJSON: {...}', and comments) dropped."""
    out = []
    for pkg, pattern in LOG_SOURCES:
        for path in _package_files((pkg,), pattern):
            lines = []
            with open(path, "rb") as f:
                for raw in f:
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        text = raw.decode("latin-1")
                    text = _clean(text)
                    if text and not (pkg == "fail2ban" and text.startswith("#")):
                        lines.append(text)
            if lines:
                out.append((path, lines))
    return sorted(out)


def build_logs(ctx: Context) -> Iterator[str]:
    """Machine logs, a log line per line. The real samples Debian ships are too small (9,174 lines,
    192k words): fail2ban's test logs (94 files, 1,085 lines: sshd, sshd's journal, postfix,
    dovecot, apache, asterisk, exim, named, ... one to a few hundred lines each),
    python3-haproxy-log-analysis's test logs (17 files, 4,829 lines of HAProxy HTTP logs through
    syslog, most of them one site's) and logstalgia's example Apache access log (3,260 lines).
    So: every real line once, in path order, then blocks resampled from them until the corpus
    holds LOG_WORDS (700k) words, the last block cut there. A block is 1-LOG_BLOCK_LINES
    consecutive lines of one file (its first line drawn uniformly over all real lines, so files
    weigh by their lines), with the variable fields (_LOG_FIELD) drawn anew: a time of day becomes
    a clock that starts at random with each block and steps 0-19 s a line, an IPv4 address a
    random one, hex ids random hex of the same length, other numbers of 4+ digits (PIDs, ports,
    sizes, ids) random of the same width; dates, years, time zones, shorter numbers and all the
    words stay. Templates repeat, one-off tokens abound, as in real logs. Deterministic for ``--seed``."""
    files = _log_files()
    ctx.notes["files"] = {path: len(lines) for path, lines in files}
    words = 0
    for _, lines in files:
        for line in lines:
            words += len(line.split())
            yield line
    ctx.notes["real_lines"] = sum(len(lines) for _, lines in files)
    ctx.notes["real_words"] = words
    starts = list(itertools.accumulate(len(lines) for _, lines in files))
    rng = random.Random(ctx.seed)
    blocks = 0
    while words < LOG_WORDS:
        g = rng.randrange(starts[-1])
        f = bisect.bisect_right(starts, g)
        lines = files[f][1]
        first = g - (starts[f] - len(lines))
        clock = rng.randrange(86_400)
        blocks += 1
        for line in lines[first:first + rng.randint(1, LOG_BLOCK_LINES)]:
            line = _redraw_fields(line, rng, clock)
            clock = (clock + rng.randrange(20)) % 86_400
            words += len(line.split())
            yield line
            if words >= LOG_WORDS:  # the last block ends where the corpus has its words
                break
    ctx.notes["resampled_blocks"] = blocks


# ---------------------------------------------------------------------------------------------
# Adversarial corpora built from gcide


# Sizes of the adversarial corpora (module constants so that tests can build small ones)
BASE_WORDS = 2_000_000  # gcide words under repeat-paragraph, sorted-dominant, huge-lines
REPEATS = 10_000  # copies of the paragraph
ONE_WORD_TOKENS = 1_000_000
HUGE_LINE_WORDS = 100_000
TINY_VOCAB = 50


def build_repeat_paragraph(ctx: Context) -> Iterator[str]:
    """2M words of gcide with one 50-100-word paragraph (consecutive gcide lines from later in the
    file, joined) repeated 10,000 times, contiguously, in the middle."""
    lines = _gcide_lines(ctx.gcide)
    base = _take_words(lines, BASE_WORDS)
    rest = _take_words(lines, BASE_WORDS // 2)  # the paragraph comes from text the base does not hold
    rng = random.Random(ctx.seed)
    start = rng.randrange(max(len(rest) - 100, 1))
    words: list[str] = []
    for line in rest[start:]:
        words += line.split()
        if len(words) >= 50:
            break
    paragraph = " ".join(words[:100])
    ctx.notes.update(paragraph=paragraph, repeats=REPEATS, at_line=len(base) // 2)
    yield from base[:len(base) // 2]
    for _ in range(REPEATS):
        yield paragraph
    yield from base[len(base) // 2:]


def build_sorted_dominant(ctx: Context) -> Iterator[str]:
    """2M words of gcide, lines sorted by their dominant token (the token a line holds most often,
    ties to the more frequent word in the corpus), most frequent dominant token first, and
    within a block the lines where it is densest first: one word dominates long stretches
    ('the' for the first hundreds of thousands of words, then 'of', 'a', ...)."""
    base = _take_words(_gcide_lines(ctx.gcide), BASE_WORDS)
    toks = _tokens(base)
    freq = collections.Counter(t for line in toks for t in line)
    by_rank = [w for w, _ in freq.most_common()]
    rank = {w: i for i, w in enumerate(by_rank)}
    keys = []
    for i, line in enumerate(toks):
        if not line:
            keys.append((len(rank), 0, i))
            continue
        counts = collections.Counter(line)
        word = min(counts, key=lambda w: (-counts[w], rank[w]))
        keys.append((rank[word], -counts[word] / len(line), i))
    order = sorted(range(len(base)), key=keys.__getitem__)
    blocks = collections.Counter(keys[i][0] for i in order)
    ctx.notes["largest_blocks"] = [
        {"token": by_rank[k], "lines": n} for k, n in blocks.most_common(5)]
    for i in order:
        yield base[i]


def build_one_word_lines(ctx: Context) -> Iterator[str]:
    """1M gcide tokens, each on its own line: no line has a context word, so there is nothing to
    train on (a trainer must finish, not hang or divide by zero)."""
    lines, n = _gcide_lines(ctx.gcide), 0
    while n < ONE_WORD_TOKENS:
        batch = list(itertools.islice(lines, 50_000))
        if not batch:
            break
        tokens = [t for line in _tokens(batch) for t in line][:ONE_WORD_TOKENS - n]
        n += len(tokens)
        yield from tokens


def build_huge_lines(ctx: Context) -> Iterator[str]:
    """2M words of gcide joined into lines of 100,000 words each (the readers and the sentence
    cutting see rows of ~600 KB)."""
    buf: list[str] = []
    for line in _take_words(_gcide_lines(ctx.gcide), BASE_WORDS):
        buf += line.split()
        while len(buf) >= HUGE_LINE_WORDS:
            yield " ".join(buf[:HUGE_LINE_WORDS])
            buf = buf[HUGE_LINE_WORDS:]
    if buf:
        yield " ".join(buf)


def build_tiny_vocab(ctx: Context) -> Iterator[str]:
    """All of gcide restricted to its 50 most frequent tokens (other tokens dropped, emptied lines
    dropped): real word order, a 50-word vocabulary, every word frequent."""
    lines = list(_gcide_lines(ctx.gcide))
    toks: list[list[str]] = []
    for i in range(0, len(lines), 50_000):
        toks += _tokens(lines[i:i + 50_000])
    freq = collections.Counter(t for line in toks for t in line)
    keep = {w for w, _ in freq.most_common(TINY_VOCAB)}
    ctx.notes["vocabulary"] = sorted(keep)
    for line in toks:
        kept = [t for t in line if t in keep]
        if kept:
            yield " ".join(kept)


CORPORA = [
    Corpus("kjv", "scripture: 31k verses, formulaic ('and it came to pass', genealogies, repeated laws)",
           build_kjv, ("bible-kjv", "bible-kjv-text"),
           "KJV text: public domain (copyright expired); bible-kjv: GPL-2+"),
    Corpus("manpages", "manual pages: Linux man-pages 1-8, boilerplate headers, SYNOPSIS/ERRORS formulae, code",
           build_manpages, ("manpages", "manpages-dev", "groff-base"),
           "Linux man-pages: mixed free licenses (Linux-man-pages-copyleft, GPL-2+, BSD, Expat; see copyright)"),
    Corpus("manpages-de", "German: manual pages translated by the manpages-l10n project (umlauts, compounds)",
           build_manpages_de, ("manpages-de", "groff-base"),
           "manpages-l10n translations: GPL-3+; the pages themselves: their authors' free licenses (see copyright)"),
    Corpus("manpages-ru", "Russian: manual pages translated by the manpages-l10n project (Cyrillic, inflection)",
           build_manpages_ru, ("manpages-ru", "groff-base"),
           "manpages-l10n translations: GPL-3+; the pages themselves: their authors' free licenses (see copyright)"),
    Corpus("wordnet", "thesaurus: WordNet 3.0 senses with [syn: ...] lists, each synset repeated under every member",
           build_wordnet, ("dict-wn",), "WordNet 3.0 license (BSD-like); packaging GPL-2+"),
    Corpus("computing-dicts", "dictionaries: FOLDOC + Jargon File + V.E.R.A. acronyms (short formulaic entries)",
           build_computing_dicts, ("dict-foldoc", "dict-jargon", "dict-vera"),
           "FOLDOC: GFDL-1.1+, no invariant sections; Jargon File: public domain; V.E.R.A.: GFDL-1.1+, no invariant "
           "sections"),
    Corpus("python-docs", "code/docs: Python 3 documentation sources (reST prose, directives, code) + NEWS",
           build_python_docs, ("python3-doc",), "PSF License / Zero-Clause BSD (Python documentation)"),
    Corpus("code", "code: Python 3.11 standard library (.py) + GNU C library headers, a source line per line",
           build_code, CODE_PACKAGES,
           "Python standard library: PSF License (PSF-2.0; see copyright); glibc headers: LGPL-2.1+ (parts from "
           "4.4BSD and others under permissive licenses; see copyright)"),
    Corpus("logs", "logs: real service logs (fail2ban's samples, HAProxy, Apache), resampled to 700k words, fields anew",
           build_logs, tuple(pkg for pkg, _ in LOG_SOURCES),
           "fail2ban (its test logs): GPL-2+; haproxy-log-analysis: GPL-3; logstalgia: GPL-3+"),
    Corpus("repeat-paragraph", "adversarial: gcide 2M words, one ~70-word paragraph repeated 10,000 times mid-corpus",
           build_repeat_paragraph, needs_gcide=True, license="GPL-2+ (gcide)"),
    Corpus("sorted-dominant", "adversarial: gcide 2M words, lines sorted by dominant token (one word rules stretches)",
           build_sorted_dominant, needs_gcide=True, license="GPL-2+ (gcide)"),
    Corpus("one-word-lines", "adversarial: 1M gcide tokens, one token per line (no context at all)",
           build_one_word_lines, needs_gcide=True, license="GPL-2+ (gcide)"),
    Corpus("huge-lines", "adversarial: gcide 2M words in 100,000-word lines",
           build_huge_lines, needs_gcide=True, license="GPL-2+ (gcide)"),
    Corpus("tiny-vocab", "adversarial: all of gcide restricted to its 50 most frequent tokens",
           build_tiny_vocab, needs_gcide=True, license="GPL-2+ (gcide)"),
]
BY_NAME = {c.name: c for c in CORPORA}

# Everything the real corpora need from Debian (bookworm), for CI or a user:
#   apt-get install -y --no-install-recommends $(python bench/stress_corpora.py --apt-packages)
APT_PACKAGES = tuple(sorted({p for c in CORPORA for p in c.packages}))


def apt_command(packages: Iterable[str] = APT_PACKAGES) -> str:
    return "apt-get install -y --no-install-recommends " + " ".join(packages)


# ---------------------------------------------------------------------------------------------
# Packages and statistics


def package_versions(packages: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Installed version of each package, and the packages that are not installed."""
    versions, missing = {}, []
    for pkg in packages:
        try:
            r = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", pkg], capture_output=True, text=True)
        except FileNotFoundError:  # not a Debian system
            missing.append(pkg)
            continue
        status, _, version = r.stdout.partition("\t")
        if r.returncode == 0 and status.endswith(" installed"):
            versions[pkg] = version
        else:
            missing.append(pkg)
    return versions, missing


def _need_tool(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise MissingSource(f"'{tool}' not found: apt-get install -y {package}")


def check_sources(corpus: Corpus, gcide: str) -> str | None:
    """None if ``corpus`` can be built here, else one line saying what to install."""
    if corpus.needs_gcide and not os.path.exists(gcide):
        return f"stress corpus '{corpus.name}' is built from {gcide}, which does not exist (pass --gcide PATH)"
    _, missing = package_versions(corpus.packages)
    if missing:
        return (f"stress corpus '{corpus.name}' needs Debian package{'s' * (len(missing) > 1)} "
                f"{' '.join(missing)}: {apt_command(missing)}")
    return None


def corpus_stats(path: str, batch_lines: int = 100_000) -> dict:
    """Size and repetition of a built corpus file.

    words: whitespace-separated; tokens: w2v_dist's tokenizer (what the trainer counts);
    dup_line_fraction: lines equal to an earlier line / lines; dup_word_fraction: the same
    weighted by words; max_identical_run: the longest run of consecutive identical lines;
    top1_share / top10_share: share of all tokens taken by the most frequent 1 / 10 tokens;
    dup_5gram_fraction / dup_8gram_fraction: token n-grams (running across lines) that repeat an
    earlier one / all n-grams: formulaic text shows here when its lines differ.
    """
    seen: set[bytes] = set()
    lines = words = dup_lines = dup_words = longest = run = max_words = 0
    prev = None
    counts: collections.Counter = collections.Counter()
    ids: dict[str, int] = {}
    id_batches: list[np.ndarray] = []
    sha = hashlib.sha256()

    def count_tokens(batch: list[str]) -> None:
        toks, _ = tokenize(pa.array(batch, pa.string()), TokenizerConfig())
        vc = pc.value_counts(toks)
        counts.update(dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())))
        id_batches.append(np.array([ids.setdefault(t, len(ids)) for t in toks.to_pylist()], np.uint64))

    batch: list[str] = []
    with open(path, "rb") as f:
        for raw in f:
            sha.update(raw)
            line = raw.rstrip(b"\n")
            n = len(line.split())
            lines += 1
            words += n
            max_words = max(max_words, n)
            key = hashlib.blake2b(line, digest_size=8).digest()
            if key in seen:
                dup_lines += 1
                dup_words += n
            else:
                seen.add(key)
            run = run + 1 if line == prev else 1
            longest = max(longest, run)
            prev = line
            batch.append(line.decode("utf-8"))
            if len(batch) >= batch_lines:
                count_tokens(batch)
                batch = []
    if batch:
        count_tokens(batch)
    tokens = sum(counts.values())
    stream = np.concatenate(id_batches) if id_batches else np.zeros(0, np.uint64)
    dup_ngrams = {n: _dup_ngram_fraction(stream, n) for n in (5, 8)}
    top = heapq.nlargest(10, counts.items(), key=lambda kv: kv[1])
    return {
        "words": words,
        "tokens": tokens,
        "lines": lines,
        "mean_words_per_line": round(words / max(lines, 1), 2),
        "max_words_per_line": max_words,
        "distinct_tokens": len(counts),
        "dup_line_fraction": round(dup_lines / max(lines, 1), 4),
        "dup_word_fraction": round(dup_words / max(words, 1), 4),
        "max_identical_run": longest,
        "dup_5gram_fraction": dup_ngrams[5],
        "dup_8gram_fraction": dup_ngrams[8],
        "top1_token": top[0][0] if top else None,
        "top1_share": round(top[0][1] / max(tokens, 1), 4) if top else 0.0,
        "top10_share": round(sum(n for _, n in top) / max(tokens, 1), 4),
        "sha256": sha.hexdigest(),
    }


def _dup_ngram_fraction(ids: np.ndarray, n: int) -> float:
    grams = max(len(ids) - n + 1, 0)
    h = np.zeros(grams, np.uint64)
    for k in range(n):  # a polynomial hash of each n-gram, wrapping mod 2**64
        h = h * np.uint64(1_000_003) + ids[k:k + grams]
    return round((grams - len(np.unique(h))) / max(grams, 1), 4)


# ---------------------------------------------------------------------------------------------
# Build


def paths(out_dir: str, name: str) -> tuple[str, str]:
    return os.path.join(out_dir, name + ".txt"), os.path.join(out_dir, name + ".json")


def build(corpus: Corpus, out_dir: str, gcide: str = str(GCIDE), seed: int = 1, force: bool = False) -> dict:
    """Build one corpus (or return its record if it is built); returns the NAME.json record."""
    txt, meta = paths(out_dir, corpus.name)
    if not force and os.path.exists(txt) and os.path.exists(meta):
        record = json.loads(Path(meta).read_text())
        if record.get("version") == VERSION and record.get("seed") == seed:
            return record
    problem = check_sources(corpus, gcide)
    if problem:
        raise MissingSource(problem)
    versions, _ = package_versions(corpus.packages)
    os.makedirs(out_dir, exist_ok=True)
    ctx = Context(gcide=gcide, seed=seed)
    tmp = txt + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for line in corpus.build(ctx):
            line = line.replace("\n", " ").strip()
            if line:
                f.write(line + "\n")
    record = {"name": corpus.name, "version": VERSION, "seed": seed, "shape": corpus.shape,
              "packages": versions, "license": corpus.license,
              "source": "../shared/data/gcide_en.txt.gz" if corpus.needs_gcide else "Debian packages",
              **corpus_stats(tmp), "notes": ctx.notes}
    os.replace(tmp, txt)
    Path(meta + ".tmp").write_text(json.dumps(record, indent=2) + "\n")
    os.replace(meta + ".tmp", meta)
    return record


def summary_line(r: dict) -> str:
    src = " ".join(f"{p} {v}" for p, v in r["packages"].items()) or r["source"]
    return (f"{r['name']:<17} {r['words']:>10,} words {r['lines']:>9,} lines  dup lines {r['dup_line_fraction']:.1%}  "
            f"dup words {r['dup_word_fraction']:.1%}  "
            f"dup 5/8-grams {r['dup_5gram_fraction']:.1%}/{r['dup_8gram_fraction']:.1%}  "
            f"longest identical run {r['max_identical_run']:,}  "
            f"top-1 '{r['top1_token']}' {r['top1_share']:.1%}  [{src}]")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", nargs="?", default=str(ROOT / "bench" / "out" / "stress-corpora"),
                   help="where NAME.txt / NAME.json go (default: %(default)s)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="build only these corpora (default: all)")
    p.add_argument("--list", action="store_true", help="list the corpora and what is built, build nothing")
    p.add_argument("--apt", action="store_true", help="print the apt-get command for every Debian package used")
    p.add_argument("--apt-packages", action="store_true", help="print the Debian packages, one per line")
    p.add_argument("--gcide", default=str(GCIDE), help="base text of the adversarial corpora (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--force", action="store_true", help="rebuild corpora that are built")
    a = p.parse_args(argv)

    if a.apt or a.apt_packages:
        print(apt_command() if a.apt else "\n".join(APT_PACKAGES))
        return 0
    unknown = [n for n in a.only or [] if n not in BY_NAME]
    if unknown:
        p.error(f"unknown corpus {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    chosen = [BY_NAME[n] for n in a.only] if a.only else CORPORA
    if a.list:
        for c in chosen:
            txt, meta = paths(a.out_dir, c.name)
            built = os.path.exists(txt) and os.path.exists(meta)
            print(summary_line(json.loads(Path(meta).read_text())) if built else
                  f"{c.name:<17} {check_sources(c, a.gcide) or 'not built'}")
            print(f"{'':<17} {c.shape}")
        return 0
    # fail fast: every missing package, in one line, before anything is built
    problems = [msg for c in chosen if not os.path.exists(paths(a.out_dir, c.name)[1]) or a.force
                if (msg := check_sources(c, a.gcide))]
    if problems:
        missing = sorted({pkg for c in chosen for pkg in package_versions(c.packages)[1]})
        hint = f"; to install all: {apt_command(missing)}" if missing else ""
        print(f"error: {'; '.join(problems)}{hint if len(problems) > 1 else ''}", file=sys.stderr)
        return 2
    for c in chosen:
        try:
            print(summary_line(build(c, a.out_dir, a.gcide, a.seed, a.force)), flush=True)
        except MissingSource as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
