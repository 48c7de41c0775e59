"""Every fr_lib function and class the book uses names the section that
introduces it in its docstring (scripts/section_refs.py keeps them current)."""
import fr_lib
import section_refs


def test_docstrings_name_their_book_section():
    assert section_refs.main(["--check"]) == 0, \
        "run: python scripts/section_refs.py"


def test_the_book_uses_what_it_should():
    uses = section_refs.book_uses()
    assert len(uses) >= 50, len(uses)
    for obj in (fr_lib.model_zoo.get_model, fr_lib.metrics.VerificationEvaluator,
                fr_lib.train.FaceTrainer, fr_lib.data.PKSampler):
        key = (obj.__module__, obj.__qualname__)
        assert key in uses, key
        section = uses[key][0][0]
        assert f"``{section}``" in obj.__doc__, (key, section)
