"""Language that never empties a list: detection among the index's languages with a confidence and
length floor, the corpus majority as default, `any` for a thin language, one 422 for unknown codes."""
from __future__ import annotations

import random

import pytest

from recommender.config import TextConfig
from recommender.policy.ranking import RelatedQuery
from recommender.related import RelatedIndex
from recommender.vectors.language import LanguageDetector, assign_languages, detect_language, majority
from tests.corpora import build_records, record
from tests.test_api import ready, serve

# story -> (language, words of the story); English has the most stories, so it is the corpus majority.
STORIES = {
    "orion": ("en", "Orion telescope mirror galaxies astronomers images pictures observatory deep space light"),
    "marlow": ("en", "Marlow council bike lanes High Street cycling traffic shops parking residents"),
    "westbury": ("en", "Westbury City Harton football cup goal striker match league keeper"),
    "passau": ("de", "Passau Hochwasser Donau Pegel Feuerwehr Sandsäcke Altstadt Regen Helfer Keller"),
    "wien": ("de", "Wien Wahl Bürgermeister Stimmen Partei Gemeinderat Kandidat Umfrage Wahlkampf Bezirk"),
    "lyon": ("fr", "Lyon grève cheminots trains gare syndicats SNCF voyageurs retards région"),
    "sevilla": ("es", "Sevilla huelga médicos hospital pacientes sindicato consultas salud junta urgencias"),
    "milano": ("it", "Milano sciopero treni stazione pendolari sindacati ritardi metropolitana binari viaggiatori"),
}
FUNCTION_WORDS = {
    "en": "the of and to in that is was for on with as by at from".split(),
    "de": "der die und in den von zu das mit sich des auf für ist im dem nicht ein".split(),
    "fr": "le de la les et des en un une du est que pour dans qui sur par".split(),
    "es": "el de la que y en los del se las por un para con una".split(),
    "it": "il di che e la per un in del della non sono una le dei con".split(),
}
ARTICLES_PER_STORY = 4
# Title-only or nearly empty records without a language, one per language at least.
SHORT = [
    record("short-en-orion", "Orion telescope: in pictures", "", lang=None),
    record("short-en-westbury", "Westbury City 2-1 Harton", "<script>var score = [2, 1];</script>", lang=None),
    record("short-de", "Passau: Hochwasser an der Donau steigt weiter", "", lang=None),
    record("short-fr", "Lyon : la grève des cheminots continue", "", lang=None),
    record("short-es", "Sevilla: sigue la huelga de los médicos", "", lang=None),
    record("short-it", "Milano, lo sciopero dei treni continua", "", lang=None),
]
SHORT_LANG = {"short-en-orion": "en", "short-en-westbury": "en", "short-de": "de", "short-fr": "fr",
              "short-es": "es", "short-it": "it"}


def story_records() -> list[dict]:
    records = []
    for story, (lang, words) in STORIES.items():
        vocab = words.split()
        for i in range(ARTICLES_PER_STORY):
            rng = random.Random(f"{story}-{i}")
            body = " ".join(rng.choice(vocab) if rng.random() < 0.5 else rng.choice(FUNCTION_WORDS[lang]) for _ in range(60))
            records.append(record(f"{story}-{i}", " ".join(rng.sample(vocab, 5)), body, lang=lang, category=story))
    return records


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory) -> RelatedIndex:
    data_dir, _ = build_records(tmp_path_factory.mktemp("multilingual"), story_records() + SHORT)
    return RelatedIndex.open(data_dir)


# -- detection ------------------------------------------------------------------------------
def detector(languages=("en", "de", "fr", "es", "it"), default="en", **config) -> LanguageDetector:
    return LanguageDetector.for_text(TextConfig(**config), languages, default)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Die Bundesregierung hat am Montag beschlossen, die Steuern für kleine Unternehmen zu senken.", "de"),
        ("The government decided on Monday to cut taxes for small businesses across the country.", "en"),
        ("Le gouvernement a décidé lundi de réduire les impôts des petites entreprises du pays.", "fr"),
        ("El gobierno decidió el lunes bajar los impuestos de las pequeñas empresas del país.", "es"),
        ("Il governo ha deciso lunedì di ridurre le tasse per le piccole imprese del paese.", "it"),
    ],
)
def test_detects_each_supported_language(text, expected):
    assert detect_language(text, default="xx") == expected


def test_short_or_unsure_text_gets_the_default():
    assert detector(default="de").detect("Wahl") == "de"  # shorter than detect_min_chars
    # py3langid's best guess for this English title is Italian, at under 0.5: not confident enough.
    assert detector(default="en").detect("Orion telescope: in pictures") == "en"
    assert detector(default="en", detect_min_confidence=0.0).detect("Orion telescope: in pictures") == "it"


def test_detection_answers_only_the_languages_given():
    german = "Die Bundesregierung hat am Montag beschlossen, die Steuern zu senken."
    assert detector(languages=("en", "fr")).guess(german) in (None, "en", "fr")
    assert detector(languages=("de",)).detect("Orion telescope: in pictures") == "de"  # one language: no guessing
    assert detector(languages=("xx", "yy"), default="en").detect(german) == "en"  # codes the model does not know


def test_default_is_the_configured_language_else_the_majority():
    declared = ["de", "de", None, "en", None]
    texts = ["", "", "kurz", "", "Die Bundesregierung hat am Montag beschlossen, die Steuern zu senken."]
    assert assign_languages(declared, texts, TextConfig()) == ["de", "de", "de", "en", "de"]
    assert assign_languages(declared, texts, TextConfig(default_lang="it"))[2] == "it"
    assert majority({"en": 2, "de": 2, "fr": 1}) == "de" and majority({}) == "en"


# -- lists ----------------------------------------------------------------------------------
@pytest.mark.parametrize("article_id", sorted(SHORT_LANG))
def test_title_only_records_get_their_language_and_a_list(multilingual, article_id):
    row = multilingual.row_of[article_id]
    assert multilingual.item_metadata(row)["lang"] == SHORT_LANG[article_id]
    result = multilingual.for_article(article_id, RelatedQuery(limit=3))
    assert result.items, result
    assert {i["lang"] for i in result.items} == {SHORT_LANG[article_id]}


def test_short_english_title_lists_its_story(multilingual):
    result = multilingual.for_article("short-en-orion", RelatedQuery(limit=3))
    assert all(i["id"].startswith("orion-") for i in result.items) and len(result.items) == 3


def test_the_marlow_draft_gets_a_list(multilingual):
    result = multilingual.for_draft("Marlow High Street bike lanes. Marlow", "", None, RelatedQuery(limit=4))
    assert [i["id"].split("-")[0] for i in result.items] == ["marlow"] * 4
    assert result.fill_reason is None


def test_the_index_knows_its_languages_and_majority(multilingual):
    assert multilingual.languages == {"en": 14, "de": 9, "es": 5, "fr": 5, "it": 5}
    assert multilingual.detector.default == "en"
    assert multilingual.info()["languages"] == multilingual.languages


def test_thin_language_falls_back_to_any_and_says_so(tmp_path):
    records = story_records() + [record(
        # Shares some of the Milano story's words, not all: in a corpus this small both rows keep only four
        # terms, and the same four would make them copies (cosine 0.996), collapsed by the duplicate policy.
        "lonely-it", "Milano, ritardi della metropolitana", "La metropolitana di Milano ha ritardi per lo sciopero.", lang="it",
    )]
    records = [r for r in records if r["lang"] != "it" or r["id"] in ("lonely-it", "milano-0")]
    data_dir, _ = build_records(tmp_path, records)
    index = RelatedIndex.open(data_dir)  # Italian: two articles, one other each (< min_language_articles = 3)
    result = index.for_article("lonely-it", RelatedQuery(limit=3))
    assert len(result.items) == 3 and result.fill_reason == "language_fallback"
    assert result.items[0]["id"] == "milano-0" and {i["lang"] for i in result.items} != {"it"}
    explicit = index.for_article("lonely-it", RelatedQuery(limit=3, lang="it"))  # a filter asked for stays one
    assert [i["id"] for i in explicit.items] == ["milano-0"] and explicit.fill_reason == "exhausted"
    draft = index.for_draft("Milano, lo sciopero dei treni continua", "", "it", RelatedQuery(limit=3))
    assert len(draft.items) == 3 and draft.fill_reason == "language_fallback"


def test_an_update_detects_among_the_index_languages(tmp_path):
    from recommender.pipeline.update import update
    from tests.corpora import write_jsonl

    german = [r for r in story_records() if r["lang"] == "de"]
    data_dir, _ = build_records(tmp_path, german)
    source = write_jsonl(tmp_path / "new.jsonl", [record("new-short", "Orion telescope: in pictures", "", lang=None)])
    update(source, data_dir)
    index = RelatedIndex.open(data_dir)
    assert index.item_metadata(index.row_of["new-short"])["lang"] == "de"  # the only language of the index


# -- API: one behaviour for unknown codes ---------------------------------------------------------
@pytest.fixture(scope="module")
def client(multilingual):
    with serve(multilingual.version.path.parents[1]) as c:
        yield ready(c)


def test_unknown_language_is_the_same_422_in_get_and_drafts(client):
    got = client.get("/v1/articles/orion-0/related", params={"lang": "xx"})
    posted = client.post("/v1/related", json={"title": "Orion telescope", "lang": "xx"})
    for response, parameter in ((got, "lang"), (posted, "body.lang")):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_parameter" and error["parameter"] == parameter
        assert "de, en, es, fr, it" in error["message"] or "en, de" in error["message"]


def test_known_languages_and_any_are_accepted(client):
    assert client.get("/v1/articles/orion-0/related", params={"lang": "DE", "limit": 2}).status_code == 200
    draft = client.post("/v1/related", json={"title": "Marlow High Street bike lanes. Marlow", "lang": "any"})
    assert draft.status_code == 200 and draft.json()["items"]
    assert client.get("/v1/index").json()["languages"]["en"] == 14


def test_openapi_documents_the_lang_rule(client):
    spec = client.get("/openapi.json").json()
    params = spec["paths"]["/v1/articles/{article_id}/related"]["get"]["parameters"]
    lang = next(p for p in params if p["name"] == "lang")
    assert "422" in lang["description"] and "index's languages" in lang["description"]
    draft = spec["components"]["schemas"]["DraftRequest"]["properties"]["lang"]
    assert "422" in draft["description"]
