#!/usr/bin/env python3
"""Generates data/topics.tsv: short labelled sentences in five topics.

The set is synthetic (templates with slot fillers, a shared pool of everyday words, and a share of
sentences that borrow words from another topic), so that it ships with the project under the
project's licence, needs no download, and is hard enough that a bag-of-words model does not reach
100%. Run it again to regenerate the same file: the seed is fixed.
"""
import random

random.seed(20261128)

TOPICS = {
    "sports": {
        "subj": ["the striker", "our goalkeeper", "the home team", "the captain", "the coach", "the visitors",
                 "the young sprinter", "the defender", "the champions", "the referee", "the rookie", "the squad"],
        "verb": ["scored", "missed", "defended", "celebrated", "trained for", "lost", "won", "dominated",
                 "conceded", "qualified for"],
        "obj": ["the final", "a late goal", "the penalty", "the derby", "the league title", "the second half",
                "the tournament", "the relay", "a corner kick", "the championship match", "the playoffs",
                "extra time"],
        "tail": ["in front of a packed stadium", "after a tense match", "before the season break",
                 "with a stunning volley", "despite an injury", "on the away ground", "in the last minute"],
    },
    "weather": {
        "subj": ["heavy rain", "a cold front", "the storm", "strong winds", "morning fog", "the heatwave",
                 "thick snow", "a thunderstorm", "light drizzle", "the hurricane", "frost", "humid air"],
        "verb": ["swept across", "covered", "hit", "is expected over", "lingered over", "cooled", "flooded",
                 "moved toward", "will clear from", "battered"],
        "obj": ["the coast", "the northern hills", "the valley", "the city overnight", "the islands",
                "the plains", "the mountain passes", "the region", "the airport", "the harbour"],
        "tail": ["with temperatures near freezing", "according to the forecast", "bringing sunny spells later",
                 "as humidity rises", "with gusts over ninety kilometres", "until the weekend",
                 "with a chance of showers"],
    },
    "finance": {
        "subj": ["the central bank", "investors", "the stock market", "bond yields", "the company", "shares",
                 "the startup", "analysts", "the currency", "the pension fund", "traders", "the bank"],
        "verb": ["raised", "cut", "reported", "bought", "sold", "forecast", "doubled", "warned about",
                 "invested in", "priced in"],
        "obj": ["interest rates", "quarterly earnings", "its dividend", "inflation", "the merger",
                "record profits", "new bonds", "a loss", "the budget deficit", "the share buyback",
                "higher revenue", "the index"],
        "tail": ["after the earnings call", "as markets opened", "amid recession fears", "on the exchange",
                 "ahead of the audit", "for the fiscal year", "despite weak demand"],
    },
    "cooking": {
        "subj": ["the chef", "my grandmother", "the baker", "this recipe", "the kitchen team", "our host",
                 "the cook", "a home cook", "the pastry chef", "the restaurant"],
        "verb": ["roasted", "baked", "simmered", "seasoned", "chopped", "served", "whisked", "grilled",
                 "marinated", "fried"],
        "obj": ["the garlic", "fresh bread", "a tomato sauce", "the vegetables", "the chicken", "a lemon tart",
                "the onions", "a spicy curry", "the dough", "the salmon", "a mushroom risotto", "the eggs"],
        "tail": ["with olive oil and herbs", "for twenty minutes", "until golden brown", "over a low heat",
                 "with a pinch of salt", "in a cast iron pan", "before dinner"],
    },
    "technology": {
        "subj": ["the new phone", "the software update", "engineers", "the chip maker", "the app",
                 "the laptop", "developers", "the cloud service", "the robot", "the browser", "the startup",
                 "the network"],
        "verb": ["released", "patched", "crashed", "launched", "upgraded", "encrypted", "shipped", "tested",
                 "deployed", "optimised"],
        "obj": ["a faster processor", "the operating system", "a security flaw", "the database",
                "a battery fix", "the neural network", "the server cluster", "a new camera", "the firmware",
                "the user interface", "the compiler", "the data centre"],
        "tail": ["after a beta test", "for millions of users", "with better battery life", "over the air",
                 "to fix a memory leak", "ahead of the conference", "with open source code"],
    },
}
FILLER = ["really", "today", "finally", "again", "this week", "last night", "once more", "quietly",
          "reportedly", "early on", "as usual", "surprisingly"]
OPENERS = ["", "", "", "breaking news:", "i heard that", "apparently", "yesterday", "this morning",
           "they say", "update:"]


def sentence(topic, borrow=None):
    t = TOPICS[topic]
    subj, verb, obj, tail = (random.choice(t[k]) for k in ("subj", "verb", "obj", "tail"))
    if borrow is not None:
        # Borrow the object or the tail from another topic, as real text mixes subjects.
        b = TOPICS[borrow]
        if random.random() < 0.5:
            obj = random.choice(b["obj"])
        else:
            tail = random.choice(b["tail"])
    words = [random.choice(OPENERS), subj, random.choice(["", random.choice(FILLER)]), verb, obj]
    if random.random() < 0.7:
        words.append(tail)
    return " ".join(w for w in words if w).strip()


rows = []
names = sorted(TOPICS)
for topic in names:
    for _ in range(180):
        borrow = random.choice([n for n in names if n != topic]) if random.random() < 0.2 else None
        rows.append((topic, sentence(topic, borrow)))
random.shuffle(rows)
with open("topics.tsv", "w") as f:
    f.write("# label<TAB>text: synthetic five-topic sentences made by gen_topics.py (fixed seed)\n")
    for label, text in rows:
        f.write(f"{label}\t{text}\n")
print(len(rows), "rows")
