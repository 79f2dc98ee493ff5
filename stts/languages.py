"""Language codes and names: one normalisation for every face, checked against an engine.

A request may name its language as an ISO-639-1 code in any case (``en``, ``EN``), as a
locale (``en-US``, ``en_us``, ``zh-Hant-TW``) or by its English name as Whisper and
OpenAI write them (``english``, ``Chinese``, ``cantonese``). :func:`normalize_language`
turns all of these into the code engines use; :func:`check_language` then refuses, with
:class:`~stts.errors.InvalidLanguage` (400), a language the chosen engine does not
recognise, before any audio is read or decoded. The HTTP faces, Wyoming and the
library share both, so the same value means the same thing everywhere.
"""

from __future__ import annotations

from stts.errors import InvalidLanguage, shorten

# Whisper's languages in its tokenizer's order (openai/whisper, tokenizer.py, MIT): the
# names are what OpenAI's verbose_json reports as "language". Base..large-v2 know the
# first 99; large-v3 added Cantonese ("yue").
LANGUAGE_NAMES: dict[str, str] = {
    "en": "english",
    "zh": "chinese",
    "de": "german",
    "es": "spanish",
    "ru": "russian",
    "ko": "korean",
    "fr": "french",
    "ja": "japanese",
    "pt": "portuguese",
    "tr": "turkish",
    "pl": "polish",
    "ca": "catalan",
    "nl": "dutch",
    "ar": "arabic",
    "sv": "swedish",
    "it": "italian",
    "id": "indonesian",
    "hi": "hindi",
    "fi": "finnish",
    "vi": "vietnamese",
    "he": "hebrew",
    "uk": "ukrainian",
    "el": "greek",
    "ms": "malay",
    "cs": "czech",
    "ro": "romanian",
    "da": "danish",
    "hu": "hungarian",
    "ta": "tamil",
    "no": "norwegian",
    "th": "thai",
    "ur": "urdu",
    "hr": "croatian",
    "bg": "bulgarian",
    "lt": "lithuanian",
    "la": "latin",
    "mi": "maori",
    "ml": "malayalam",
    "cy": "welsh",
    "sk": "slovak",
    "te": "telugu",
    "fa": "persian",
    "lv": "latvian",
    "bn": "bengali",
    "sr": "serbian",
    "az": "azerbaijani",
    "sl": "slovenian",
    "kn": "kannada",
    "et": "estonian",
    "mk": "macedonian",
    "br": "breton",
    "eu": "basque",
    "is": "icelandic",
    "hy": "armenian",
    "ne": "nepali",
    "mn": "mongolian",
    "bs": "bosnian",
    "kk": "kazakh",
    "sq": "albanian",
    "sw": "swahili",
    "gl": "galician",
    "mr": "marathi",
    "pa": "punjabi",
    "si": "sinhala",
    "km": "khmer",
    "sn": "shona",
    "yo": "yoruba",
    "so": "somali",
    "af": "afrikaans",
    "oc": "occitan",
    "ka": "georgian",
    "be": "belarusian",
    "tg": "tajik",
    "sd": "sindhi",
    "gu": "gujarati",
    "am": "amharic",
    "yi": "yiddish",
    "lo": "lao",
    "uz": "uzbek",
    "fo": "faroese",
    "ht": "haitian creole",
    "ps": "pashto",
    "tk": "turkmen",
    "nn": "nynorsk",
    "mt": "maltese",
    "sa": "sanskrit",
    "lb": "luxembourgish",
    "my": "myanmar",
    "bo": "tibetan",
    "tl": "tagalog",
    "mg": "malagasy",
    "as": "assamese",
    "tt": "tatar",
    "haw": "hawaiian",
    "ln": "lingala",
    "ha": "hausa",
    "ba": "bashkir",
    "jw": "javanese",
    "su": "sundanese",
    "yue": "cantonese",
}

_NAME_ALIASES = {  # other names Whisper accepts (its TO_LANGUAGE_CODE)
    "burmese": "my",
    "valencian": "ca",
    "flemish": "nl",
    "haitian": "ht",
    "letzeburgesch": "lb",
    "pushto": "ps",
    "panjabi": "pa",
    "moldavian": "ro",
    "moldovan": "ro",
    "sinhalese": "si",
    "castilian": "es",
    "mandarin": "zh",
}
_CODE_ALIASES = {  # ISO codes Whisper spells otherwise, and retired ones locales still use
    "jv": "jw",
    "iw": "he",
    "in": "id",
    "ji": "yi",
}
_BY_NAME = {name: code for code, name in LANGUAGE_NAMES.items()} | _NAME_ALIASES

_LISTED = 12
"""Languages a refusal names at most; longer lists are left to the engine's report."""


def normalize_language(value: str | None) -> str | None:
    """``EN``, ``en-US``, ``en_us``, ``English`` -> ``en``; empty -> None.

    A value that is no known name comes back as its lower-case primary subtag (``xx-YY``
    -> ``xx``): whether an engine knows it is :func:`check_language`'s question.
    """
    if value is None:
        return None
    text = value.strip().lower().replace("_", "-")
    if not text:
        return None
    if text in _BY_NAME:
        return _BY_NAME[text]
    base = text.split("-", 1)[0]
    return _CODE_ALIASES.get(base, base)


def language_name(code: str | None) -> str | None:
    """The English name OpenAI reports for a code (``en`` -> ``english``), else None."""
    if code is None:
        return None
    return LANGUAGE_NAMES.get(code)


def describe_languages(languages: frozenset[str] | None) -> str:
    """What a refusal says is accepted, in bounded length whatever the engine knows."""
    if languages is None:
        return "ISO-639-1 codes such as en, de, fr, or their English names"
    ordered = [c for c in LANGUAGE_NAMES if c in languages] + sorted(
        languages - LANGUAGE_NAMES.keys()
    )
    if len(ordered) <= _LISTED:
        return ", ".join(ordered)
    return f"{len(ordered)} languages, e.g. {', '.join(ordered[:3])} (ISO-639-1 codes)"


def check_language(
    value: str | None, languages: frozenset[str] | None, engine: str, model: str = ""
) -> str | None:
    """The normalised language if ``engine`` recognises it, else :class:`InvalidLanguage`.

    ``languages`` is the engine's ``Capabilities.languages``: a set is checked as it is;
    ``None`` (many, not listed) and the empty set (one language the model defines and
    the operator has not named) accept any language stts knows the name of.
    """
    code = normalize_language(value)
    if code is None:
        return None
    if code in (languages or LANGUAGE_NAMES):
        return code
    who = f"{engine} model {model!r}" if model else engine
    raise InvalidLanguage(
        f"language {shorten(value, 32)} is not supported by {who}; it accepts "
        f"{describe_languages(languages or None)}; "
        f"GET /api/v1/engines/{engine} lists its languages"
    )
