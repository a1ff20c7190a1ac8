"""FAQ questions worded the way people ask, not the way the FAQ is written: retrieval's hard case.

Each question avoids the distinctive words of the passages that answer it ("mask" where the FAQ
says "face covering", "charged" where it says "free", "spit" for "saliva"): any word it shares
with an answer is one found in at least a tenth of the FAQ's passages (test, campus, vaccine,
need...), which says "COVID-19 on campus" and not which passage answers, so BM25 cannot find the
answer by its words. The answers are named by a phrase each answering passage contains, not by
position, so the set survives the FAQ being re-split; the FAQ repeats some answers, and every
passage that answers counts (the passages each scorer put first were read and judged, and the
ones that answer added). Neither the questions nor their answers were picked by how a scorer did
on them; after that judging, three questions were reworded to keep clear of the added answers' words.
``tests/corpora/test_paraphrases.py`` checks the rule; the grounding bench
(:mod:`bot.bench.grounding`) measures hit@1.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paraphrase:
    """A question and the phrases of the passages that answer it (case-sensitive, as in the FAQ)."""

    question: str
    answers: tuple[str, ...]

    def answered_by(self, passage: str) -> bool:
        """Whether ``passage`` is one of the passages that answer the question."""
        flat = " ".join(passage.split())
        return any(phrase in flat for phrase in self.answers)


# The question the issue began with. It shares "wear" and "campus" with the answer, so it is not one
# of the paraphrases, but BM25 alone quoted a vaccination passage that mentions "masking" for it.
MASK_QUESTION = Paraphrase("Do I need to wear a mask on campus?",
                           ("required to wear face coverings", "Facial coverings are required"))

# Written against the University of Wisconsin-Madison COVID-19 FAQ (corpora.registry's ``faq``).
FAQ_PARAPHRASES: tuple[Paraphrase, ...] = (
    Paraphrase("Is a mask required in class?",
               ("required to wear face coverings", "Facial coverings are required")),
    Paraphrase("Do I have to pay for a COVID test?",
               ("There is no cost to be tested",)),
    Paraphrase("Will I be charged for the vaccine?",
               ("the vaccine is free", "This will not cost you anything")),
    Paraphrase("How will I feel after the vaccine?",
               ("Typical side effects", "others may experience symptoms such as headache and mild fever",
                "You may have some side effects", "You may experience one or more of these side effects")),
    Paraphrase("A friend of mine tested positive; do I have to keep away from everyone?",
               ("you should quarantine yourself immediately", "you should quarantine at home")),
    Paraphrase("What should I do if my COVID test comes back positive?",
               ("isolate yourself immediately", "follow the isolation instructions provided to you")),
    Paraphrase("How long until I get my test result?",
               ("Results will be available within 24 hours",)),
    Paraphrase("I can't spit enough for my test, any advice?",
               ("Try building up saliva",)),
    Paraphrase("Can I have coffee or a snack before my test?",
               ("Contamination can occur for a number of reasons", "you should not eat or drink, smoke",
                "do not drink anything in the one hour before your test")),
    Paraphrase("Can my boss find out whether I've had the vaccine?",
               ("employees are not required to share this information with supervisors",
                "employees should not be asked to share this information")),
    Paraphrase("What time of day can I get tested?",
               ("Testing begins as early as 6:30 a.m.", "early morning and late evening hours")),
    Paraphrase("Where do I leave my car when I get vaccinated?",
               ("Parking is available without cost for those coming to be vaccinated",)),
    Paraphrase("Can I get the vaccine if I'm not a citizen?",
               ("regardless of their immigration status",)),
    Paraphrase("Could my positive test result be wrong?",
               ("The chances that you receive a false positive result are extremely low",)),
    Paraphrase("Does the app see where I am?",
               ("The app does not utilize GPS or geolocation", "the app does not access your location",
                "The apps do not track location")),
    Paraphrase("I'm going out of town for a while; what about my testing?",
               ("temporary travel exemption form",)),
    Paraphrase("Do I get proof that I've been vaccinated?",
               ("You will receive a vaccination card at your appointment",)),
    Paraphrase("I'm leaving town before I'm fully vaccinated; what should I do?",
               ("before your second dose, we encourage you to get your first dose on campus",
                "If you get your first dose and then travel")),
    Paraphrase("Is it safe to combine vaccines from two companies?",
               ("there are no known risks to mixing the different brands",)),
    Paraphrase("What does it mean when the health department calls everyone I've been around?",
               ('"Contact tracing" is a public health procedure',)),
    Paraphrase("I rent a flat; will the university give me a place to stay if I get COVID?",
               ("capacity to provide quarantine/isolation spaces",)),
    Paraphrase("Does my family need a test to visit campus?",
               ("members of the public are not required to test",
                "No, you do not need to test. You are considered a visitor")),
    Paraphrase("Is getting tested counted as part of my job?",
               ("Testing is a paid work activity", "Testing is a work obligation for both hourly and salaried")),
    Paraphrase("After I've had COVID, when can I go back to work?",
               ("you can return to work once you meet the following conditions",)),
    Paraphrase("I have a cough and a fever; can I still attend class?",
               ("You should not be on campus with symptoms", "you should not go to school or work")),
    Paraphrase("Why was my test thrown out?",
               ("If your test was rejected",)),
    Paraphrase("How do I download the Safer Badgers app?",
               ("The Apple and Android versions of the app",)),
    Paraphrase("Who made the Safer Badgers app?",
               ("The app was developed by the University of Illinois",)),
    Paraphrase("Is the new COVID strain from Britain here?",
               ("B.1.1.7 variant",)),
    Paraphrase("How old do I have to be to get the vaccine?",
               ("age 16 and older", "age 16 and over")),
    Paraphrase("Why was the one-shot vaccine stopped?",
               ("pause administration of the Johnson & Johnson vaccine",)),
    Paraphrase("I've had my vaccine; must I stay home after being near an infected friend?",
               ("you are not required to quarantine following an exposure",)),
)
