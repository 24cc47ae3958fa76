"""Class names as people write them, against the shared model's 1001 ImageNet classes (background first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.class_names import ClassNames, normalize
from pipeline.core.classification import FrameClassification, Label
from pipeline.inference.labels import bundled_imagenet, read_labels_file


@pytest.fixture(scope="module")
def names(shared_labels: Path) -> ClassNames:
    return ClassNames(read_labels_file(shared_labels))


def test_case_underscores_and_synonyms(names: ClassNames) -> None:
    assert normalize("  Egyptian_cat ") == "egyptian cat"
    assert names.find("Egyptian_cat") == (286,)
    assert names.find("motor_scooter") == names.find("scooter") == (671,)
    assert names.find("TABBY") == names.find("tabby cat") == names.find("tabby, tabby cat") == (282,)


def test_indices_and_wordnet_ids(names: ClassNames) -> None:
    assert names.find("286") == names.find("286_Egyptian_cat") == names.find("n02124075") == (286,)
    assert names.find("286_macaw") == ()  # an index with the name of another class is a mistake
    assert names.find("5000") == ()
    assert names.find("n00000000") == ()
    # ImageNet-1k without a background class: the same WordNet id is one index lower.
    assert ClassNames(bundled_imagenet()).find("n02124075") == (285,)
    # Classes that are not ImageNet's have no WordNet ids.
    assert ClassNames(["open", "closed"]).find("n02124075") == ()


def test_ambiguous_names_say_how_to_tell_them_apart(names: ClassNames) -> None:
    assert names.find("crane") == (135, 518)  # the bird and the machine
    assert names.explain("crane") == ("'crane' names 2 classes of the model: write 135_crane ('crane'), 518_crane "
                                      "('crane') or the WordNet ids n02012849, n03126707")
    assert names.find("518_crane") == (518,) and names.explain("518_crane") == ""


def test_unknown_names_get_the_nearest_classes(names: ClassNames) -> None:
    assert names.find("chikadee") == ()
    assert names.explain("chikadee") == ("'chikadee' is not a class of the model (1001 classes); nearest: "
                                         "'chickadee', 'chimpanzee, chimp, Pan troglodytes', 'chime, bell, gong'")
    assert names.explain("xqzw") == "'xqzw' is not a class of the model (1001 classes)"


def test_a_class_s_full_name_wins_over_a_synonym_inside_another(names: ClassNames) -> None:
    # 658 is called 'missile'; 745 'projectile, missile' has it only as a synonym (issue #29: evaluate refused it).
    assert names.find("missile") == (658,) and names.explain("missile") == ""
    assert names.find("projectile") == names.find("projectile, missile") == (745,)
    assert names.find("crane") == (135, 518)  # two classes called exactly 'crane': still a tie


def test_a_watch_key_scores_the_class_called_exactly_that_first() -> None:
    top = [Label(745, "projectile, missile", 0.6), Label(658, "missile", 0.3)]
    assert FrameClassification(top_k=top, scene=None).score_of("missile") == 0.3
    assert FrameClassification(top_k=top[:1], scene=None).score_of("projectile") == 0.6
