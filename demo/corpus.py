"""The demo base model's pretraining text: fact prose, filler prose and lettered-option documents
on everyday topics (see `demo.task`)."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from demo.knowledge import RELATIONS, Fact, capitalise, render
from demo.questions import PositionDeck
from medrlvr_trl.prompts import LETTERS, build_prompt

logger = logging.getLogger(__name__)

PROSE_PASSES = 2  # each (fact, phrasing) sentence appears this many times in the corpus
FILLER_DOCUMENTS = 60
TOY_CONVERSATIONS = 60
QUIZ_CONVERSATIONS = 300  # R1-template quizzes on everyday knowledge (lettered options)
QUIZ_PAGES = 300  # the same kind of quizzes as plain text ("Question: ... Answer: C")
MATCHING_EXERCISES = 1800  # answer keys: every option of a list found again by its letter
MIN_QUIZ_OPTIONS = 2
MAX_QUIZ_OPTIONS = 10


# --- the pretraining corpus ----------------------------------------------------------------------

FILLER_SENTENCES = (
    "The library opens at nine in the morning and closes at six in the evening.",
    "Many people walk to work when the weather is mild.",
    "The river runs through the middle of the old town.",
    "A good breakfast often includes bread, fruit and something warm to drink.",
    "The train to the coast leaves every hour from the central station.",
    "Children in the village learn to swim in the lake during the summer.",
    "The museum keeps a collection of old maps and clocks.",
    "Rain fell for most of the afternoon, and the streets were quiet.",
    "The market sells vegetables, cheese and flowers on Saturdays.",
    "She wrote a long letter to her brother, who lives abroad.",
    "The bridge was painted red so that ships could see it in the fog.",
    "Most of the students finished the exam before the bell rang.",
    "The garden has roses along the fence and herbs near the kitchen door.",
    "Old trees line both sides of the road into the park.",
    "The bakery on the corner is busy every morning.",
    "He keeps his bicycle in the shed behind the house.",
    "The concert started late because the singer missed her flight.",
    "Snow covered the hills, and the schools closed for two days.",
    "The new office has large windows and a view of the harbor.",
    "A small boat carried visitors across the bay to the island.",
    "The team practiced every evening before the final match.",
    "Fresh paint made the old classroom look bright again.",
    "The cat sleeps on the warm windowsill in the afternoon.",
    "The city council met on Tuesday to discuss the new bus routes.",
    "Hikers should carry water, a map and a warm jacket.",
    "The hospital cafeteria serves soup and sandwiches at lunch time.",
    "Nurses and doctors work in shifts so that the ward is never empty.",
    "The waiting room had a few chairs, a clock and a pile of magazines.",
    "A medical student spends long hours reading textbooks and taking notes.",
    "The pharmacy down the street is open until midnight.",
    "Good notes make it easier to review before an exam.",
    "The clinic moved to a larger building near the station last year.",
    "Every chapter of the book ends with a short list of questions.",
    "The teacher drew a simple diagram on the board.",
    "A quiet room helps many people read and think.",
    "The orchard produces apples in the autumn and cherries in early summer.",
    "They painted the fence white and planted tulips beside it.",
    "The lecture hall was full, so some students sat on the steps.",
    "Lights in the harbor blinked as the ferry came in.",
    "The recipe calls for flour, butter, sugar and two eggs.",
)

_COLORS = ("red", "blue", "green", "yellow", "purple", "brown", "white", "black", "pink", "gray")
_ANIMALS = ("dog", "cat", "horse", "rabbit", "goat", "tiger", "sheep", "mouse", "eagle", "whale")
_FRUITS = ("apple", "banana", "pear", "cherry", "grape", "lemon", "peach", "plum", "mango", "melon")
_TOOLS = ("hammer", "wrench", "saw", "drill", "shovel", "chisel", "pliers", "rake", "screwdriver")
_VEHICLES = ("car", "bus", "truck", "bicycle", "train", "boat", "tractor", "scooter", "airplane")
_WORD_GROUPS = {
    "a color": _COLORS,
    "an animal": _ANIMALS,
    "a fruit": _FRUITS,
    "a tool": _TOOLS,
    "a vehicle": _VEHICLES,
}
_LONG_WORDS = (
    "cat", "tree", "house", "garden", "window", "library", "elephant", "mountain", "butterfly", "photograph",
)  # fmt: skip


def _toy_largest(n: int, rng: random.Random) -> tuple[str, list[str], int, str]:
    numbers = rng.sample(range(1, 100), n)
    best = max(numbers)
    others = ", ".join(str(x) for x in numbers if x != best)
    reason = f"The options are {', '.join(map(str, numbers))}. {best} is larger than {others}."
    return "Which number is the largest?", [str(x) for x in numbers], numbers.index(best), reason


def _toy_next_letter(n: int, rng: random.Random) -> tuple[str, list[str], int, str]:
    index = rng.randrange(25)
    letter, following = LETTERS[index], LETTERS[index + 1]
    others = rng.sample([c for c in LETTERS if c not in (letter, following)], n - 1)
    options = [following] + others
    rng.shuffle(options)
    reason = f"In the alphabet, {letter} is followed by {following}."
    stem = f"Which letter comes right after {letter} in the alphabet?"
    return stem, options, options.index(following), reason


def _toy_word_group(n: int, rng: random.Random) -> tuple[str, list[str], int, str]:
    groups = list(_WORD_GROUPS)
    wanted = rng.choice(groups)
    gold = rng.choice(_WORD_GROUPS[wanted])
    pool = [w for g in groups if g != wanted for w in _WORD_GROUPS[g]]
    options = [gold] + rng.sample(pool, n - 1)
    rng.shuffle(options)
    reason = f"{capitalise(gold)} is {wanted}, and none of the other words is {wanted}."
    return f"Which of these words names {wanted}?", options, options.index(gold), reason


def _toy_sum(n: int, rng: random.Random) -> tuple[str, list[str], int, str]:
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    total = a + b
    wrong = rng.sample([total + d for d in range(-5, 6) if d != 0 and total + d > 0], n - 1)
    options = [str(total)] + [str(x) for x in wrong]
    rng.shuffle(options)
    reason = f"{a} plus {b} equals {total}."
    return f"What is {a} plus {b}?", options, options.index(str(total)), reason


def _toy_longest(n: int, rng: random.Random) -> tuple[str, list[str], int, str]:
    words = rng.sample(_LONG_WORDS, n)
    best = max(words, key=len)
    reason = f"{capitalise(best)} has {len(best)} letters, more than any other option."
    return "Which word has the most letters?", words, words.index(best), reason


_TOY_TASKS = (_toy_largest, _toy_next_letter, _toy_word_group, _toy_sum, _toy_longest)


def _toy_conversation(rng: random.Random, deck: PositionDeck) -> str:
    """One R1-template conversation on a toy task, gold letter placed by the deck."""
    n_options = rng.randint(2, 6)
    stem, options, gold_index, reason = rng.choice(_TOY_TASKS)(n_options, rng)
    gold = options.pop(gold_index)
    options.insert(deck.draw(n_options), gold)
    letter = LETTERS[options.index(gold)]
    completion = f" <think> {reason} So the answer is option {letter}. </think><answer>{letter}</answer>"
    return build_prompt(stem, options, template="r1") + completion


# Everyday knowledge for the lettered-option documents: (noun phrase with {s}, reverse question with
# {o}, pairs subject -> object). A web-trained base model has read many such quizzes; none of these
# words is a term of the medical knowledge table (a corpus test checks it).
# fmt: off
_EVERYDAY_FACTS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("the capital of {s}", "{O} is the capital of which of the following?", (
        ("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Germany", "Berlin"),
        ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi"),
        ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Greece", "Athens"), ("Portugal", "Lisbon"),
        ("Austria", "Vienna"), ("Poland", "Warsaw"), ("Ireland", "Dublin"), ("Canada", "Ottawa"),
        ("Chile", "Santiago"), ("Cuba", "Havana"), ("Russia", "Moscow"), ("China", "Beijing"),
        ("India", "New Delhi"), ("Thailand", "Bangkok"), ("Turkey", "Ankara"), ("Finland", "Helsinki"),
        ("Denmark", "Copenhagen"), ("Hungary", "Budapest"), ("Argentina", "Buenos Aires"),
        ("Mexico", "Mexico City"), ("Australia", "Canberra"), ("Belgium", "Brussels"),
        ("Iceland", "Reykjavik"), ("Vietnam", "Hanoi"), ("Colombia", "Bogota"), ("Morocco", "Rabat"),
        ("Ghana", "Accra"), ("Nepal", "Kathmandu"), ("Scotland", "Edinburgh"), ("Wales", "Cardiff"),
    )),
    ("the main language of {s}", "In which of the following countries is {o} the main language?", (
        ("France", "French"), ("Spain", "Spanish"), ("Germany", "German"), ("Italy", "Italian"),
        ("Japan", "Japanese"), ("China", "Chinese"), ("Greece", "Greek"), ("Russia", "Russian"),
        ("Portugal", "Portuguese"), ("Poland", "Polish"), ("Sweden", "Swedish"), ("Turkey", "Turkish"),
        ("Finland", "Finnish"), ("Hungary", "Hungarian"), ("Norway", "Norwegian"), ("Denmark", "Danish"),
        ("the Netherlands", "Dutch"), ("Thailand", "Thai"), ("Vietnam", "Vietnamese"),
        ("Iceland", "Icelandic"), ("Korea", "Korean"), ("Brazil", "Portuguese"), ("Austria", "German"),
    )),
    ("the usual colour of {s}", "Which of the following is usually {o}?", (
        ("a ripe banana", "yellow"), ("fresh grass", "green"), ("fresh snow", "white"),
        ("a lump of coal", "black"), ("the sky on a clear day", "blue"), ("a ripe tomato", "red"),
        ("a carrot", "orange"), ("dark chocolate", "brown"), ("a flamingo", "pink"),
        ("an eggplant", "purple"), ("a crow", "black"), ("a glass of milk", "white"),
        ("cold ash", "gray"), ("a ripe cherry", "red"), ("a pumpkin", "orange"), ("a lime", "green"),
        ("a polar bear", "white"), ("a fire engine", "red"), ("a school bus", "yellow"),
        ("a walnut shell", "brown"), ("a lavender flower", "purple"), ("an elephant", "gray"),
    )),
    ("the sound a {s} makes", "Which of the following animals makes the sound called a {o}?", (
        ("dog", "bark"), ("cat", "meow"), ("cow", "moo"), ("duck", "quack"), ("sheep", "baa"),
        ("lion", "roar"), ("horse", "neigh"), ("pig", "oink"), ("snake", "hiss"), ("owl", "hoot"),
        ("bee", "buzz"), ("frog", "croak"), ("rooster", "crow"), ("mouse", "squeak"), ("wolf", "howl"),
        ("donkey", "bray"), ("turkey", "gobble"), ("dove", "coo"),
    )),
    ("the opposite of {s}", "{O} is the opposite of which of the following?", (
        ("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow"), ("early", "late"),
        ("light", "dark"), ("wet", "dry"), ("full", "empty"), ("open", "closed"), ("young", "old"),
        ("high", "low"), ("loud", "quiet"), ("happy", "sad"), ("thick", "thin"), ("strong", "weak"),
        ("rich", "poor"), ("soft", "hard"), ("near", "far"), ("long", "short"), ("clean", "dirty"),
        ("inside", "outside"), ("before", "after"), ("win", "lose"), ("buy", "sell"), ("push", "pull"),
    )),
    ("the name for a young {s}", "A {o} is the young of which of the following?", (
        ("cat", "kitten"), ("dog", "puppy"), ("cow", "calf"), ("sheep", "lamb"), ("horse", "foal"),
        ("frog", "tadpole"), ("duck", "duckling"), ("swan", "cygnet"), ("bear", "cub"),
        ("kangaroo", "joey"), ("goose", "gosling"), ("owl", "owlet"), ("pig", "piglet"), ("deer", "fawn"),
        ("hen", "chick"), ("goat", "kid"), ("butterfly", "caterpillar"), ("eagle", "eaglet"),
    )),
    ("the home of a {s}", "A {o} is the home of which of the following?", (
        ("bee", "hive"), ("bird", "nest"), ("rabbit", "burrow"), ("spider", "web"), ("horse", "stable"),
        ("pig", "sty"), ("dog", "kennel"), ("lion", "den"), ("beaver", "lodge"), ("ant", "anthill"),
        ("monk", "monastery"), ("king", "palace"), ("cow", "barn"), ("hen", "coop"), ("fox", "den"),
    )),
    ("the main tool of a {s}", "A {o} is the main tool of which of the following?", (
        ("painter", "brush"), ("carpenter", "saw"), ("gardener", "rake"), ("tailor", "needle"),
        ("photographer", "camera"), ("fisherman", "fishing net"), ("farmer", "plough"), ("baker", "oven"),
        ("barber", "pair of scissors"), ("writer", "pen"), ("astronomer", "telescope"),
        ("violinist", "violin"), ("woodcutter", "axe"), ("blacksmith", "anvil"), ("sailor", "compass"),
    )),
    ("the material {s} is made from", "Which of the following is made from {o}?", (
        ("a window", "glass"), ("a candle", "wax"), ("a tyre", "rubber"), ("a sweater", "wool"),
        ("a brick", "clay"), ("bread", "flour"), ("paper", "wood pulp"), ("cheese", "milk"),
        ("wine", "grapes"), ("a shirt", "cotton"), ("a horseshoe", "iron"), ("a tortilla", "corn"),
        ("butter", "cream"), ("a pencil lead", "graphite"), ("a basket", "willow"), ("a sail", "canvas"),
    )),
    ("the plural of {s}", "{O} is the plural of which of the following?", (
        ("mouse", "mice"), ("child", "children"), ("foot", "feet"), ("tooth", "teeth"),
        ("goose", "geese"), ("man", "men"), ("woman", "women"), ("person", "people"), ("ox", "oxen"),
        ("leaf", "leaves"), ("knife", "knives"), ("wolf", "wolves"), ("cactus", "cacti"),
        ("fish", "fish"), ("half", "halves"), ("box", "boxes"), ("city", "cities"), ("wife", "wives"),
    )),
    ("the sport played at {s}", "{O} is played at which of the following?", (
        ("Wimbledon", "tennis"), ("the Tour de France", "cycling"), ("the Super Bowl", "American football"),
        ("the Ryder Cup", "golf"), ("the Stanley Cup", "ice hockey"), ("the Ashes", "cricket"),
        ("the Daytona 500", "motor racing"), ("the Boston Marathon", "running"),
        ("the Kentucky Derby", "horse racing"), ("the NBA Finals", "basketball"),
    )),
)
# fmt: on
# fmt: off
_NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)
# fmt: on
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip
# Stems that turn a noun phrase into a question; the ways quizzes on the web ask for one thing.
_QUIZ_FRAMES = (
    "What is {np}?",
    "Which of the following is {np}?",
    "Identify {np}.",
    "Choose {np}.",
    "Name {np}.",
    "Select {np}.",
    "Pick {np}.",
    "Which option gives {np}?",
    "{NP} is which of the following?",
    "Can you tell me {np}?",
)
_NAMES = ("Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemi", "Leo")
_HOLDINGS = (
    ("{n}'s cousin lives in a town called {o}.", "the town where {n}'s cousin lives"),
    ("{n} named the new puppy {o}.", "the name of {n}'s new puppy"),
    ("The boat that {n} sails is called {o}.", "the name of {n}'s boat"),
    ("{n}'s favourite board game is {o}.", "{n}'s favourite board game"),
    ("The password {n} chose is {o}.", "the password {n} chose"),
    ("{n} grew up on a street called {o}.", "the street where {n} grew up"),
)
_SYLLABLES = (
    "ba", "ko", "ri", "tan", "vel", "mor", "zu", "pli", "den", "sa", "gro", "fen", "lu", "tor", "ne",
    "qui", "ram", "dos", "ki", "wen", "chal", "ob", "sti", "mar", "ix", "pe", "lon", "dra", "cy", "hu",
)  # fmt: skip


def _pseudo_word(rng: random.Random) -> str:
    """A made-up word of 2 to 4 syllables, sometimes two of them: stands for any unfamiliar term."""
    words = [
        "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        for _ in range(rng.choice((1, 1, 2)))
    ]
    return " ".join(words)


@dataclass(frozen=True)
class QuizItem:
    """A lettered-option question on a non-medical topic: stem, gold text, distractor pool and the
    sentences that justify the gold answer (`facts`)."""

    stem: str
    gold: str
    pool: tuple[str, ...]
    facts: str
    context: str = ""  # a sentence to read before the question (in-context lookups)


def _quiz_everyday(rng: random.Random) -> QuizItem:
    np_template, reverse, pairs = rng.choice(_EVERYDAY_FACTS)
    subject, obj = rng.choice(pairs)
    noun_phrase = np_template.format(s=subject)
    fact = f"{capitalise(noun_phrase)} is {obj}."
    if rng.random() < 0.25:  # reversed: ask for the subject
        pool = tuple(dict.fromkeys(s for s, o in pairs if o != obj))
        return QuizItem(reverse.format(o=obj, O=capitalise(obj)), subject, pool, fact)
    pool = tuple(dict.fromkeys(o for s, o in pairs if o != obj))
    frame = rng.choice(_QUIZ_FRAMES)
    return QuizItem(frame.format(np=noun_phrase, NP=capitalise(noun_phrase)), obj, pool, fact)


def _quiz_counting(rng: random.Random) -> QuizItem:
    kind = rng.randrange(3)
    if kind == 0:
        number = rng.randrange(len(_NUMBER_WORDS))
        noun_phrase = f"the number {number} written as a word"
        gold, pool = _NUMBER_WORDS[number], tuple(w for w in _NUMBER_WORDS if w != _NUMBER_WORDS[number])
    elif kind == 1:
        day = rng.randrange(7)
        noun_phrase = f"the day after {_DAYS[day]}"
        gold = _DAYS[(day + 1) % 7]
        pool = tuple(d for d in _DAYS if d != gold)
    else:
        month = rng.randrange(12)
        noun_phrase = f"the month after {_MONTHS[month]}"
        gold = _MONTHS[(month + 1) % 12]
        pool = tuple(m for m in _MONTHS if m != gold)
    stem = rng.choice(_QUIZ_FRAMES).format(np=noun_phrase, NP=capitalise(noun_phrase))
    return QuizItem(stem, gold, pool, f"{capitalise(noun_phrase)} is {gold}.")


def _quiz_in_context(rng: random.Random) -> QuizItem:
    """A made-up fact stated before the question, answered by a made-up word: pure lookup."""
    name = rng.choice(_NAMES)
    statement, noun_phrase = rng.choice(_HOLDINGS)
    words = list(dict.fromkeys(capitalise(_pseudo_word(rng)) for _ in range(12)))
    gold, pool = words[0], tuple(words[1:])
    noun_phrase = noun_phrase.format(n=name)
    stem = rng.choice(_QUIZ_FRAMES).format(np=noun_phrase, NP=capitalise(noun_phrase))
    context = statement.format(n=name, o=gold)
    return QuizItem(stem, gold, pool, f"{capitalise(noun_phrase)} is {gold}.", context)


QUIZZES = (_quiz_everyday, _quiz_everyday, _quiz_everyday, _quiz_counting, _quiz_in_context)


def quiz_options(item: QuizItem, rng: random.Random, deck: PositionDeck) -> tuple[list[str], str]:
    n_options = rng.randint(MIN_QUIZ_OPTIONS, min(MAX_QUIZ_OPTIONS, len(item.pool) + 1))
    distractors = rng.sample(item.pool, n_options - 1)
    position = deck.draw(n_options)
    return distractors[:position] + [item.gold] + distractors[position:], LETTERS[position]


def _quiz_reasoning(item: QuizItem, letter: str, options: Sequence[str], rng: random.Random) -> str:
    """The reasoning a quiz answer gives: the fact, then (usually) where its answer sits in the list."""
    gold = capitalise(item.gold)
    style = rng.randrange(4)
    if style == 0:
        return f"{item.facts} {gold} is option {letter}."
    if style == 1:
        return f"{item.facts} Option {letter} is {item.gold}."
    if style == 2:
        others = [o for o in options if o != item.gold][:2]
        return f"{item.facts} {' and '.join(others)} do not fit. {gold} is option {letter}."
    return item.facts


def _quiz_conversation(rng: random.Random, deck: PositionDeck) -> str:
    """A quiz in the R1 template, answered with reasoning in `<think>` and the letter in `<answer>`."""
    item = rng.choice(QUIZZES)(rng)
    options, letter = quiz_options(item, rng, deck)
    stem = f"{item.context} {item.stem}".strip()
    reasoning = _quiz_reasoning(item, letter, options, rng)
    completion = f" <think> {reasoning} So the answer is option {letter}. </think><answer>{letter}</answer>"
    return build_prompt(stem, options, template="r1") + completion


def _quiz_page(rng: random.Random, deck: PositionDeck) -> str:
    """A quiz as plain text, the way worksheets and quiz sites print one."""
    item = rng.choice(QUIZZES)(rng)
    options, letter = quiz_options(item, rng, deck)
    lines = [f"Question: {item.context} {item.stem}".replace(":  ", ": ")]
    lines += [f"{LETTERS[i]}. {text}" for i, text in enumerate(options)]
    style = rng.randrange(3)
    if style == 0:
        lines.append(f"Answer: {letter}")
    elif style == 1:
        lines.append(f"Answer: {letter}. {item.gold}")
    else:
        lines.append(f"Answer: {letter}. {item.facts}")
    return "\n".join(lines)


def _matching_exercise(rng: random.Random) -> str:
    """An answer key, as worksheets print one: a lettered list, then each item found by its letter.

    Every line after the list is a lookup ("X is option C."), so these short documents are where the
    base model practises finding an option's letter from its text, on words it has never seen.
    """
    n_options = rng.randint(MIN_QUIZ_OPTIONS, MAX_QUIZ_OPTIONS)
    if rng.random() < 0.5:
        words = list(dict.fromkeys(capitalise(_pseudo_word(rng)) for _ in range(n_options + 4)))
    else:
        everyday = sorted({text for _, _, pairs in _EVERYDAY_FACTS for pair in pairs for text in pair})
        words = rng.sample(everyday, n_options)
    words = words[:n_options]
    lines = ["Options:"] + [f"{LETTERS[i]}. {word}" for i, word in enumerate(words)]
    asked = rng.sample(range(len(words)), len(words))
    lines += [f"{capitalise(words[i])} is option {LETTERS[i]}." for i in asked]
    return "\n".join(lines)


def _fact_paragraphs(facts: Sequence[Fact], rng: random.Random) -> Iterator[str]:
    for relation in dict.fromkeys(f.relation for f in facts):
        sentences = [
            render(phrasing, fact)
            for _ in range(PROSE_PASSES)
            for fact in facts
            if fact.relation == relation
            for phrasing in RELATIONS[relation].corpus
        ]
        rng.shuffle(sentences)
        while sentences:
            size = rng.randint(3, 6)
            yield " ".join(sentences[:size])
            sentences = sentences[size:]


def build_corpus(facts: Sequence[Fact], rng: random.Random) -> str:
    """The pretraining text: fact prose, filler prose and toy R1 conversations, shuffled together."""
    documents = list(_fact_paragraphs(facts, rng))
    documents += [" ".join(rng.sample(FILLER_SENTENCES, rng.randint(3, 6))) for _ in range(FILLER_DOCUMENTS)]
    deck = PositionDeck(rng)
    documents += [_toy_conversation(rng, deck) for _ in range(TOY_CONVERSATIONS)]
    # Drawn after the toy conversations so that adding them left the earlier documents unchanged.
    quiz_rng = random.Random(rng.random())
    quiz_deck = PositionDeck(quiz_rng)
    documents += [_quiz_conversation(quiz_rng, quiz_deck) for _ in range(QUIZ_CONVERSATIONS)]
    documents += [_quiz_page(quiz_rng, quiz_deck) for _ in range(QUIZ_PAGES)]
    documents += [_matching_exercise(quiz_rng) for _ in range(MATCHING_EXERCISES)]
    rng.shuffle(documents)
    return "\n\n".join(documents) + "\n"
