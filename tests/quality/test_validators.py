"""The Validator plug-in point, the quality configuration, and the demo's Validator."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runledger.demo.validator import REQUIRED_SECTIONS, render_site, validate
from runledger.quality import (
    Artifact,
    QualityConfigError,
    ValidatorError,
    Verdict,
    load_quality_config,
    load_validator,
)
from runledger.quality.validators import run_validator

PAGE = render_site("saas-launch", "Globex", random.Random(1), flaw_rate=0)


def _artifact(content: str = PAGE, playbook: str = "saas-launch") -> Artifact:
    return Artifact("globex", "p1", playbook, "site/index.html", 3, "text/html", content)


@pytest.fixture
def plugin_package(tmp_path: Path) -> Iterator[Path]:
    """An installed distribution (on sys.path) registering a runledger.validators entry point."""
    (tmp_path / "acme_checks.py").write_text(
        "def strict_only(artifact, *, strict):\n"
        "    return (not strict, 'strict mode refuses everything' if strict else '')\n"
    )
    info = tmp_path / "acme_checks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-checks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[runledger.validators]\nacme = acme_checks:strict_only\n"
    )
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("acme_checks", None)


def test_a_validator_loads_by_module_function_or_entry_point(plugin_package: Path) -> None:
    assert load_validator("runledger.demo.validator:validate") is validate
    by_entry_point = load_validator("acme")
    assert run_validator(by_entry_point, _artifact()) == (
        "fail",
        "strict mode refuses everything",
    )


def test_a_validator_spec_that_names_nothing_says_what_was_tried() -> None:
    with pytest.raises(ValidatorError, match="cannot import no_such_module"):
        load_validator("no_such_module:check")
    with pytest.raises(ValidatorError, match=r"runledger\.demo\.validator has no nope"):
        load_validator("runledger.demo.validator:nope")
    with pytest.raises(ValidatorError, match="is not callable"):
        load_validator("runledger.demo.validator:REQUIRED_SECTIONS")
    with pytest.raises(
        ValidatorError,
        match=r"no entry point of that name in group 'runledger\.validators'.*module:function",
    ):
        load_validator("missing-plugin")


def test_every_answer_form_and_a_raising_validator() -> None:
    art = _artifact()
    assert run_validator(lambda a, *, strict: Verdict(True), art) == ("pass", "")
    assert run_validator(lambda a, *, strict: False, art) == (
        "fail",
        "failed strict validation (no reason given)",
    )
    assert run_validator(lambda a, *, strict: (False, "no  pricing\nsection"), art) == (
        "fail",
        "no pricing section",
    )

    def boom(a: Artifact, *, strict: bool) -> Verdict:
        raise KeyError("hero")

    assert run_validator(boom, art) == ("error", "the validator raised KeyError: 'hero'")
    assert run_validator(lambda a, *, strict: "ok", art) == (
        "error",
        "the validator answered str; expected a Verdict, a bool or (passed, reason)",
    )


def test_the_demo_validator_checks_real_structure_strictly() -> None:
    assert validate(_artifact(), strict=True) == Verdict(True)
    no_pricing = PAGE.replace('id="pricing"', 'id="prices"')
    assert validate(_artifact(no_pricing), strict=False).passed
    assert validate(_artifact(no_pricing), strict=True) == Verdict(
        False, "missing required section(s): pricing"
    )
    no_cta = PAGE.replace('class="cta"', 'class="link"')
    assert validate(_artifact(no_cta), strict=False) == Verdict(
        False, "hero section has no call to action"
    )
    no_alt = PAGE.replace(' alt="Globex storefront"', "")
    assert validate(_artifact(no_alt), strict=True) == Verdict(False, "1 image(s) without alt text")
    placeholder = PAGE.replace("</section></body>", "<p>Lorem ipsum dolor.</p></section></body>")
    assert validate(_artifact(placeholder), strict=True) == Verdict(
        False, "placeholder text left in the page: lorem ipsum"
    )
    assert set(REQUIRED_SECTIONS["saas-launch"]) <= set(
        s.split('"')[0] for s in PAGE.split('<section id="')[1:]
    )


def test_the_quality_configuration_names_a_bad_key(tmp_path: Path) -> None:
    config = load_quality_config(
        {"validator": "a:b", "playbooks": {"blog": {"threshold": 0.5, "validator": "c:d"}}}
    )
    spec, settings = config.for_playbook("blog")
    assert (spec, settings.threshold, settings.size) == ("c:d", 0.5, 50)
    assert config.for_playbook("other") == ("a:b", config.sample)
    path = tmp_path / "quality.yml"
    path.write_text("sample:\n  threshold: 1.5\ndrift:\n  correction: bonferroni\n")
    with pytest.raises(QualityConfigError) as err:
        load_quality_config(path)
    assert "sample.threshold: must be <= 1" in str(err.value)
    assert "drift.correction" in str(err.value)
    path.write_text("schedule:\n  sample: every day\n")
    with pytest.raises(QualityConfigError, match=r"schedule\.sample"):
        load_quality_config(path)
