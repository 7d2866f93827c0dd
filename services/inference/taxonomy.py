"""Search tags for ImageNet-1k classes: words of the label plus coarse groups from the WordNet hierarchy.

ImageNet-1k class ids follow WordNet ids, so most groups are contiguous id ranges ("151-268" are the dog breeds);
man-made objects are scattered and listed one by one.
"""

import re
from collections.abc import Iterable, Sequence
from typing import Protocol

IMAGENET_CLASSES = 1000

_GROUPS: dict[str, str] = {
    # Animals.
    "animal": "0-397",
    "fish": "0-6, 389-397",
    "shark": "2-4",
    "bird": "7-24, 80-100, 127-146",
    "bird of prey": "21-24",
    "parrot": "87-90",
    "waterfowl": "97-100",
    "amphibian": "25-32",
    "frog": "30-32",
    "salamander": "25-29",
    "reptile": "33-68",
    "turtle": "33-37",
    "lizard": "38-48",
    "crocodilian": "49-50",
    "dinosaur": "51",
    "snake": "52-68",
    "invertebrate": "69-79, 107-126, 300-329",
    "arachnid": "70-78",
    "spider": "72-77",
    "crustacean": "118-126",
    "crab": "118-121, 125",
    "mollusk": "112-117",
    "insect": "300-326",
    "beetle": "300-307",
    "butterfly": "321-326",
    "mammal": "101-106, 147-388",
    "marsupial": "104-106",
    "whale": "147-148",
    "marine mammal": "147-150",
    "dog": "151-268",
    "canine": "151-275, 277-280",
    "wolf": "269-271",
    "fox": "277-280",
    "cat": "281-285",
    "big cat": "286-293",
    "feline": "281-293",
    "bear": "294-297, 388",
    "rabbit": "330-332",
    "rodent": "333-338",
    "hoofed mammal": "339-355",
    "horse": "339",
    "pig": "341-343",
    "cattle": "345-347",
    "antelope": "351-353",
    "primate": "365-384",
    "ape": "365-369",
    "monkey": "370-382",
    "lemur": "383-384",
    "elephant": "101, 385-386",
    # Food and plants.
    "food": "924-969",
    "dish": "924-927, 930-935, 959, 962-965",
    "dessert": "927-929",
    "bread": "930-932",
    "vegetable": "936-946, 987, 998",
    "fruit": "948-957",
    "drink": "966-969",
    "plant": "984-990",
    "flower": "985-986",
    "fungus": "947, 991-997",
    "mushroom": "947, 991-997",
    # Places and people.
    "landscape": "970-980",
    "person": "981-983",
    # Objects.
    "vehicle": "403-405, 407-408, 436, 444, 450, 466, 468, 472, 484, 510-511, 537, 547, 554-555, 561, 565, 569, "
    "573, 575-576, 586, 595, 603, 609, 612, 625, 627-628, 654, 656, 660-661, 665, 670-671, 675, 690, 705, 717, "
    "724, 734, 751, 757, 779-780, 802-803, 812, 814, 817, 820, 829, 833, 847, 864, 866-867, 870-871, 874, 880, "
    "895, 913-914",
    "car": "436, 468, 511, 609, 627, 656, 661, 717, 751, 817",
    "truck": "407, 555, 569, 675, 717, 734, 864, 867",
    "bus": "654, 779, 874",
    "train": "466, 547, 565, 705, 820, 829",
    "boat": "403, 472, 484, 510, 554, 576, 625, 628, 694, 724, 780, 814, 833, 871, 913-914",
    "aircraft": "404-405, 812, 895, 908",
    "bicycle": "444, 671, 870, 880",
    "motorcycle": "665, 670",
    "instrument": "401-402, 420, 432, 486, 494, 513, 541-542, 546, 558, 566, 577, 579, 593-594, 641-642, 683-684, 687, "
    "699, 776, 822, 875, 881, 889",
    "music": "401-402, 420, 432, 486, 494, 513, 541-542, 546, 558, 566, 577, 579, 593-594, 641-642, 683-684, 687, "
    "699, 776, 822, 875, 881, 889",
    "guitar": "402, 546",
    "piano": "579, 881",
    "furniture": "423, 431, 453, 492-493, 495, 516, 520, 526, 532, 548, 559, 564, 648, 703, 765, 831, 857, 894",
    "chair": "423, 559, 765, 857",
    "bed": "431, 516, 520, 564",
    "table": "526, 532",
    "clothing": "399-400, 411, 433, 439, 443, 445, 451-452, 457, 459, 474, 501-502, 514-515, 529, 552, 568, 578, "
    "601, 608, 610, 614, 617, 630, 638-639, 652, 655, 658, 667, 689, 697, 715, 735, 770, 774-775, 793, 796, 806, "
    "808, 824, 834, 841-842, 869, 887, 906",
    "footwear": "502, 514, 630, 770, 774",
    "hat": "439, 452, 515, 667, 715, 808",
    "swimwear": "445, 639, 842",
    "structure": "406, 410, 421, 448, 517, 556-557, 571, 637, 640, 645, 704, 708, 733, 753, 789, 799, 807, 819, "
    "877, 884, 886, 904, 415, 424-425, 437, 442, 449, 454, 460, 467, 483, 489, 497-498, 500, 509, 525, 536, 538, "
    "540, 562, 580, 582, 624, 634, 649, 663, 668, 672, 682, 698, 706, 716, 718, 727, 743, 755, 762, 788, 821, 825, "
    "832, 839, 853, 858, 860, 863, 865, 873, 888, 900, 912, 915",
    "building": "410, 415, 424-425, 449, 454, 467, 483, 497-498, 500, 509, 580, 582, 624, 634, 663, 668, 698, 727, "
    "743, 762, 788, 832, 860, 865, 915",
    "shop": "415, 424, 454, 467, 509, 582, 788, 860, 865",
    "bridge": "821, 839, 888",
    "fence": "489, 716, 912",
    "monument": "649, 682, 863, 873",
    "electronics": "480-482, 485, 487, 508, 527-528, 590, 592, 598, 605, 613, 620, 632, 650, 662, 664, 673, 681, "
    "688, 707, 713, 732, 742, 745, 754, 759, 761, 782, 810, 848, 851, 878",
    "computer": "508, 527, 590, 620, 673, 681",
    "phone": "487, 528, 707",
    "camera": "732, 759",
    "kitchenware": "438, 441, 469, 473, 499, 503-505, 512, 521, 544, 550, 567, 572, 618, 647, 659, 725, 729, 766, "
    "773, 809, 813, 828, 849, 868, 899, 909-910, 923",
    "appliance": "534, 545, 550, 589, 606, 651, 760, 786, 811, 827, 859, 882, 891, 897",
    "tool": "426, 447, 462, 477, 488, 491, 506, 553, 587, 596, 600, 616, 621, 623, 626, 633, 635, 644, 666, 674, 677, "
    "696, 714, 726, 730-731, 739-740, 769, 778, 783-784, 792, 798, 816, 855, 872",
    "weapon": "413, 456, 471, 657, 744, 763-764",
    "gun": "413, 763-764",
    "armor": "461, 465, 490, 524, 787",
    "sports equipment": "416, 422, 429-430, 518, 522, 543, 560, 574, 602, 615, 693, 701-702, 722, 736, 746-747, "
    "752, 758, 768, 781, 795, 801, 805, 852, 890",
    "ball": "429-430, 522, 574, 722, 768, 805, 852, 890",
    "container": "412, 414, 427, 440, 463, 478, 519, 588, 636, 653, 692, 709, 720, 728, 737, 748, 756, 771, 790, "
    "876, 883, 893, 898, 901, 907",
    "bottle": "440, 720, 737, 898, 907",
    "bag": "414, 636, 728, 748, 797",
    "vehicle part": "475, 479, 535, 581, 685-686, 785",
    "cosmetics": "551, 585, 629, 631, 711, 838",
    "medical": "419, 523, 678, 691, 712, 823, 830, 840, 845",
    "stationery": "418, 446, 549, 563, 709-710, 749, 767, 772",
    "accessory": "464, 584, 591, 679, 748, 836-837, 879, 893, 903",
    "eyewear": "836-837",
    "jewelry": "679",
    "textile": "434, 533, 539, 700, 721, 741, 750, 854, 885, 905, 911",
    "lock": "507, 695",
    "toy": "398, 417, 476, 611, 646, 719, 723, 843, 850",
    "clock": "409, 530, 892",
    "timepiece": "409, 530-531, 604, 826, 835, 892",
    "lighting": "470, 619, 818, 846, 862",
    "bathroom": "435, 794, 804, 861, 896, 999",
    "text": "916-918, 921-922",
    "sign": "919-920",
}

# Misleading words no rule finds (see misleading_words for the ones it does): hen-of-the-woods is a mushroom,
# a maillot is a swimsuit.
_MISLEADING_WORDS = {996: {"hen", "woods"}, 638: {"tights", "sport", "jersey"}}
_STOP_WORDS = {"a", "an", "and", "or", "of", "the", "for", "with", "one", "piece"}
# Letters (including accented ones), optionally with an apostrophe inside, e.g. "carpenter's".
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def _parse_ids(spec: str) -> set[int]:
    ids: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        ids.update(range(int(first), int(last or first) + 1))
    return ids


def groups_by_class() -> dict[int, tuple[str, ...]]:
    """Every class id's groups, broadest first as listed above."""
    by_class: dict[int, list[str]] = {}
    for group, spec in _GROUPS.items():
        for class_id in sorted(_parse_ids(spec)):
            by_class.setdefault(class_id, []).append(group)
    return {class_id: tuple(groups) for class_id, groups in by_class.items()}


def label_words(label: str, misleading: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The useful lower-case words of a label: no stop words, no single letters, no possessive 's."""
    words = []
    for match in _WORD.finditer(label.lower()):
        word = match.group(0).removesuffix("'s")
        if len(word) > 1 and word not in _STOP_WORDS and word not in misleading:
            words.append(word)
    return words


def misleading_words(labels: tuple[str, ...], groups: dict[int, tuple[str, ...]]) -> dict[int, set[str]]:
    """Per class, the words of its label that name something it is not, so a search for them would mislead:
    a group it is outside of ("car" in "car wheel", "toy" in "toy poodle", "cat" in "Madagascar cat"), or another
    class it shares no family with ("tiger" in "tiger cat" and "tiger shark", "lion" in "sea lion"). A word naming
    a close relative stays: a snow leopard is still found by "leopard"."""
    members: dict[str, set[int]] = {}
    for class_id, names in groups.items():
        for group in names:
            members.setdefault(group, set()).add(class_id)
    class_named = {label.lower(): class_id for class_id, label in enumerate(labels)}
    found: dict[int, set[str]] = {}
    for class_id, label in enumerate(labels):
        words = set(_MISLEADING_WORDS.get(class_id, ()))
        for word in label_words(label):
            outside_group = word in members and class_id not in members[word]
            other = class_named.get(word, class_id)
            unrelated_class = other != class_id and groups.get(other, ()) != groups.get(class_id, ())
            if outside_group or unrelated_class:
                words.add(word)
        if words:
            found[class_id] = words
    return found


class Tagger:
    """Turns ranked predictions into search tags: each confident label, its words, and its groups."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self._labels = labels
        # Groups follow ImageNet-1k's class order; another label set gets words only.
        self._groups = groups_by_class() if len(labels) == IMAGENET_CLASSES else {}
        self._misleading = misleading_words(labels, self._groups) if self._groups else {}

    def tags(self, predictions: Iterable[tuple[int, float]], threshold: float) -> list[str]:
        tags: dict[str, None] = {}
        for class_id, score in predictions:
            if score < threshold:
                continue
            label = self._labels[class_id]
            words = label_words(label, self._misleading.get(class_id, frozenset()))
            for tag in (label.lower(), *words, *self._groups.get(class_id, ())):
                tags.setdefault(tag, None)
        return list(tags)


# Face tags (README, "People in photos"): measured with `python -m bench.faces`.
# A face is dominant when its area is at least this many times any other face's (twice the width): a portrait
# with people far behind its subject stays a portrait; two faces closer in size make a group.
DOMINANT_FACE_RATIO = 4.0


class _Sized(Protocol):
    @property
    def area(self) -> float: ...


def face_tags(faces: Sequence[_Sized]) -> list[str]:
    """person and people for any face; portrait for one dominant face, group for several faces without one."""
    if not faces:
        return []
    areas = sorted((face.area for face in faces), reverse=True)
    dominant = len(areas) == 1 or areas[0] >= DOMINANT_FACE_RATIO * areas[1]
    return ["person", "people", "portrait" if dominant else "group"]
