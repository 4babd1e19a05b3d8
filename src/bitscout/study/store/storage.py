"""Opening a study store: URLs and their passwords, torn journals, and the study's fingerprint.

A study holds the trials of one search. Its fingerprint (what defines a measurement:
study/fingerprint.py) is settled once, atomically, by the first worker that opens it:
every later worker, resumed run or extra process must present the same one or is refused, so
trials that mean different things never mix.
"""

import contextlib
import json
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.study import StudyDirection

from bitscout.errors import ConfigError
from bitscout.objective import Objective
from bitscout.quant.space import SearchSpace
from bitscout.study.store.compact import CompactJournal
from bitscout.study.store.deferred import DeferredWrites, WriteBehindFile
from bitscout.study.store.optuna_store import OptunaStore, is_journal, is_sqlite, repair_journal
from bitscout.study.store.secrets import mask_password, scrub

FINGERPRINT_STUDY = "{name}.fingerprint"  # companion study whose first trial is the fingerprint
FINGERPRINT = "fingerprint"  # the user attr of that trial
# The fingerprint key of the validation data: a dict of `sha256` (of the evaluated rows and
# labels, which decides) and the settings that produced them (which name what changed).
DATA_KEY = "data"
Notify = Callable[[str], None]
STORAGE_FORMS = (
    "a journal file path, sqlite:///FILE or postgresql://USER:PASSWORD@HOST:PORT/DB of a "
    "running server"
)


def _storage_error(url: str, err: BaseException) -> ConfigError:
    text = scrub(f"{err.__class__.__name__}: {' '.join(str(err).split())}"[:300], url)
    return ConfigError(
        "--storage",
        f"cannot open the storage {mask_password(url)} ({text}); allowed: {STORAGE_FORMS}",
    )


def open_storage(url: str, notify: Notify | None = None) -> BaseStorage:
    """An RDB URL (`sqlite:///f.db`, `postgresql://...`) or else the path of an Optuna journal
    file, which is safe for several processes on one machine and needs no server. A journal
    torn by a crash is repaired first, and `notify` told so in one line."""
    if "://" not in url:
        return _open_journal(Path(url), notify)
    try:
        return _open_rdb(url)
    except Exception as err:  # any driver error means a bad or unreachable store
        raise _storage_error(url, err) from err


def _open_journal(path: Path, notify: Notify | None) -> BaseStorage:
    """The journal at `path`, refused (untouched) when it is a directory or a file of
    something else: Optuna would append its records to a config or a checkpoint."""
    if path.is_dir():
        raise ConfigError("--storage", "must be an RDB URL or a journal file, not a directory",
                          str(path))  # fmt: skip
    if not is_journal(path):
        hint = f" (for an SQLite file write sqlite:///{path})" if is_sqlite(path) else ""
        raise ConfigError(
            "--storage",
            f"{path} exists and is not an Optuna journal{hint}; give a new file, a journal a "
            f"search wrote, or a URL: {STORAGE_FORMS}",
        )
    message = repair_journal(path)
    if message and notify:
        notify(message)
    return CompactJournal(WriteBehindFile(str(path)))


def _open_rdb(url: str) -> BaseStorage:
    for attempt in range(2):
        try:  # SQLAlchemy >= 2.1 reads postgresql:// with psycopg 3
            return RDBStorage(url)
        except Exception as err:
            # workers that start together on an empty database race to create Optuna's
            # tables; the losers see "already exists" and succeed on a later try
            if "already exists" not in str(err):
                raise
            time.sleep(0.5 * (attempt + 1))
    return RDBStorage(url)


def _open_any(url: str, notify: Notify | None) -> BaseStorage:
    """open_storage, retrying once with a full repair when a journal does not replay (records
    glued together by an earlier bitscout that appended after a torn line)."""
    try:
        return open_storage(url, notify)
    except ValueError as err:  # JSONDecodeError: a bad record before the journal's end
        if "://" in url or isinstance(err, ConfigError):
            raise
        message = repair_journal(url, full=True)
        if message is None:
            raise
        if notify:
            notify(message)
        return open_storage(url, notify)


def connect(url: str, notify: Notify | None = None) -> BaseStorage:
    """`open_storage` for a command that only reads the store (`bitscout dashboard`): a
    journal that does not replay is mended too, and every failure is one line (a
    `ConfigError`, or the `OSError` of the file), its credentials scrubbed."""
    try:
        return _open_any(url, notify)
    except (ConfigError, OSError):
        raise
    except Exception as err:  # a journal that no repair makes readable
        raise _storage_error(url, err) from err


def _create(storage: BaseStorage, name: str, directions: list[str]) -> None:
    if name not in optuna.get_all_study_names(storage):
        with contextlib.suppress(DuplicatedStudyError):  # another worker was first
            signs = [StudyDirection[d.upper()] for d in directions]
            optuna.create_study(storage=storage, study_name=name, directions=signs)


def settle_fingerprint(
    storage: BaseStorage, name: str, proposal: Mapping[str, Any]
) -> dict[str, Any]:
    """The fingerprint of study `name`: the first one ever proposed. Proposals are trials of a
    companion study, and the store numbers trials atomically, so of several workers starting
    at once exactly one proposal wins and every worker sees the same winner."""
    companion = FINGERPRINT_STUDY.format(name=name)
    _create(storage, companion, ["maximize"])
    sampler = optuna.samplers.RandomSampler()  # never asked: spares TPE's construction
    study = optuna.load_study(study_name=companion, storage=storage, sampler=sampler)
    if not study.get_trials(deepcopy=False):
        proposed = {FINGERPRINT: dict(proposal)}
        study.add_trial(optuna.trial.create_trial(value=0.0, user_attrs=proposed))
    trials = study.get_trials(deepcopy=False)
    return dict(min(trials, key=lambda t: t.number).user_attrs[FINGERPRINT])


def _data_change(settled: Mapping[str, Any], mine: Mapping[str, Any]) -> str | None:
    """How this search's validation data differ from the study's, or None when the rows and
    labels are the same (whatever path or options produced them)."""
    if settled.get("sha256") == mine.get("sha256"):
        return None
    for key, value in mine.items():
        if key != "sha256" and key in settled and settled[key] != value:
            return f"was made with {key} = {settled[key]!r}, this search has {value!r}"
    return (
        "was evaluated on other validation rows or labels (their SHA-256 differs although "
        f"{', '.join(k for k in mine if k != 'sha256')} are the same: did the data file change?)"
    )


def _check(name: str, settled: Mapping[str, Any], mine: Mapping[str, Any]) -> None:
    """Refuse when the study never recorded a key of this search's fingerprint (made by an
    earlier bitscout, whose values may be computed otherwise: checked first), or a key
    differs: the first such key is named."""
    missing = [key for key in mine if key not in settled]
    if missing:
        raise ConfigError("--study", f"study {name!r} was made by an earlier bitscout that did "
                          f"not record {missing[0]!r} (a resume must match on everything that "
                          "defines a measurement); use another --out or --study")  # fmt: skip
    for key, value in mine.items():
        change: str | None = None
        if key == DATA_KEY:
            change = _data_change(settled[key], value)
        elif settled[key] != value:
            where, was, now = _first_difference(key, settled[key], value)
            change = f"was made with {where} = {was!r}, this search has {now!r}"
        if change is None:
            continue
        raise ConfigError("--study", f"study {name!r} {change}; use another --out or --study")


def _first_difference(key: str, was: Any, now: Any) -> tuple[str, Any, Any]:
    """Where two fingerprint values first differ: a table's first differing entry (a missing
    one shown as None), so the message names a field, not a whole model."""
    if isinstance(was, Mapping) and isinstance(now, Mapping):
        for sub in dict.fromkeys([*now, *was]):
            if was.get(sub) != now.get(sub):
                return _first_difference(f"{key}[{sub!r}]", was.get(sub), now.get(sub))
    return key, was, now


def open_study(
    url: str | BaseStorage,
    name: str,
    objective: Objective,
    meta: Mapping[str, Any],
    sampler: optuna.samplers.BaseSampler | None = None,
    notify: Notify | None = None,
) -> optuna.Study:
    """Create or resume study `name`; refuse one made for another search. `meta` is this
    search's fingerprint, in the order its keys should be checked (settings before the data
    hash they produce, so the message names the setting that changed)."""
    mine = json.loads(json.dumps(dict(meta)))  # as the store gives it back: lists, not tuples
    try:
        storage = url if isinstance(url, BaseStorage) else _open_any(url, notify)
        if isinstance(storage, JournalStorage):  # a trial's writes as one append
            storage = DeferredWrites(storage)
        _create(storage, name, list(objective.directions))
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        # A study made by an earlier bitscout keeps its fingerprint in its user attrs: what it
        # recorded, and nothing more, is what this search must match.
        legacy = dict(study.user_attrs)
        settled = settle_fingerprint(storage, name, legacy or mine)
    except ConfigError:
        raise
    except OSError as err:  # a journal on a full or read-only disk: the machine, not the URL
        if isinstance(url, BaseStorage) or "://" in url:
            raise _storage_error(str(url), err) from err
        raise OSError(err.errno, err.strerror, err.filename or url) from None
    except Exception as err:  # any driver error means a bad or unreachable store
        raise _storage_error(str(url), err) from err
    stored = [d.name.lower() for d in study.directions]
    if stored != list(objective.directions):
        raise ConfigError(
            "--study",
            f"study {name!r} exists with objective directions {stored}, this search has "
            f"{list(objective.directions)}; use another --out or --study",
        )
    _check(name, settled, mine)
    for key, value in mine.items():  # readable in the dashboard; the companion is the truth
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
    return study


def open_store(
    url: str | BaseStorage,
    name: str,
    objective: Objective,
    meta: Mapping[str, Any],
    space: SearchSpace,
    sampler: optuna.samplers.BaseSampler | None = None,
    notify: Notify | None = None,
) -> OptunaStore:
    """`open_study` as a `Store`, its objective values named for optuna-dashboard."""
    study = open_study(url, name, objective, meta, sampler, notify)
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names(["objective"] if objective.single else objective.names)
    return OptunaStore(study, space, None if isinstance(url, BaseStorage) else url)
