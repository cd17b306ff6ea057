"""LocalAgreement-n on hand-written hypotheses: what is confirmed, when, and only once."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

from amanuensis.streaming.agreement import REWORDING_SLACK, LocalAgreement, Word, skip_confirmed, split_words


def words(text: str, start: float = 0.0, end: float | None = None) -> list[Word]:
    return split_words(text, start, end if end is not None else start + len(text) / 10, 0)


class Updates:
    """Hands hypotheses to an agreement one update interval apart, as a stream does."""

    def __init__(self, agreement: LocalAgreement, interval_s: float = 0.75) -> None:
        self.agreement, self.interval_s, self.at = agreement, interval_s, 0.0

    def __call__(self, hypothesis: list[Word]) -> list[Word]:
        self.at += self.interval_s
        return self.agreement.update(hypothesis, self.at)


def test_split_words_shares_the_segment_span_by_characters() -> None:
    got = split_words(" a bbb cccccc", 1.0, 2.0, 3)
    assert [w.text for w in got] == [" a", " bbb", " cccccc"]
    assert [round(w.end, 3) for w in got] == [1.1, 1.4, 2.0]
    assert got[0].start == 1.0 and all(a.end == b.start for a, b in itertools.pairwise(got))
    assert {w.segment for w in got} == {3}


def test_a_word_probability_is_the_product_of_its_tokens() -> None:
    # " Gut|enberg|'s| press": the second word's token overlaps nothing else.
    spans = [(4, -0.5), (10, -0.25), (12, -0.1), (18, -0.05)]
    got = split_words(" Gutenberg's press", 0.0, 1.0, 0, spans)
    assert [w.text for w in got] == [" Gutenberg's", " press"]
    assert abs(got[0].probability - math.exp(-0.85)) < 1e-9
    assert abs(got[1].probability - math.exp(-0.05)) < 1e-9
    assert all(w.probability == 1.0 for w in split_words(" no tokens given", 0.0, 1.0, 0))


def test_a_word_is_confirmed_when_two_hypotheses_agree_on_it() -> None:
    agreement = LocalAgreement()
    update = Updates(agreement)
    assert update(words(" If the")) == []
    assert [w.text for w in agreement.partial] == [" If", " the"]
    confirmed = update(words(" If the reader"))
    assert [w.text for w in confirmed] == [" If", " the"]
    # The confirmed words are repeated at the start of the next hypothesis: not confirmed again;
    # case and punctuation may change.
    assert [w.text for w in update(words(" if the reader will."))] == [" reader"]
    assert [w.text for w in update(words(" If the reader will excuse"))] == [" will"]
    assert [w.text for w in agreement.confirm_partial()] == [" excuse"]


def test_three_hypotheses_must_agree_when_asked_to() -> None:
    agreement = LocalAgreement(hypotheses=3)
    update = Updates(agreement)
    update(words(" the reader"))
    assert update(words(" the reader will")) == []  # two agree: not enough
    # The third hypothesis agrees with both earlier ones on " the" only.
    assert [w.text for w in update(words(" the leader will excuse"))] == [" the"]
    assert [w.text for w in update(words(" the leader will excuse me"))] == []
    assert [w.text for w in update(words(" the leader will excuse me."))] == [" leader", " will", " excuse"]
    assert [w.text for w in agreement.partial] == [" me."]
    agreement.forget_partial()  # e.g. the audio was dropped as silence: the count starts again
    assert update(words(" the leader will excuse me now")) == []
    assert update(words(" the leader will excuse me now")) == []
    assert [w.text for w in update(words(" the leader will excuse me now"))] == [" me", " now"]


def test_with_a_span_every_reading_over_it_must_agree() -> None:
    agreement = LocalAgreement(hypotheses=2, span_s=0.75)
    update = Updates(agreement, interval_s=0.375)  # hypotheses at 0.375, 0.75, 1.125, … s
    update(words(" the reader"))
    assert update(words(" the reader will")) == []  # two readings agree, 0.375 s apart: too close
    # The readings at 0.375, 0.75 and 1.125 s all say " the reader"; " will" only the last two.
    assert [w.text for w in update(words(" the leader will excuse"))] == [" the"]
    assert update(words(" the leader will excuse me")) == []  # " leader" read for 0.375 s only
    assert [w.text for w in update(words(" the leader will excuse me."))] == [" leader", " will", " excuse"]
    agreement.forget_partial()  # silence: the span starts again
    assert update(words(" the leader will excuse me now")) == []
    assert update(words(" the leader will excuse me now")) == []
    assert [w.text for w in update(words(" the leader will excuse me now"))] == [" me", " now"]


def test_a_reading_inside_the_span_that_differs_holds_the_word_back() -> None:
    agreement = LocalAgreement(hypotheses=2, span_s=0.75)
    update = Updates(agreement, interval_s=0.375)
    update(words(" the reader"))
    update(words(" the leader"))  # the reading between differs
    # Oldest and newest agree, and the newest with the one before does not.
    assert [w.text for w in update(words(" the reader will"))] == [" the"]
    assert update(words(" the reader will")) == []  # " reader" read alike for 0.375 s only
    assert [w.text for w in update(words(" the reader will"))] == [" reader", " will"]


def test_a_span_of_several_intervals_keeps_the_readings_it_needs() -> None:
    update = Updates(LocalAgreement(span_s=1.0), interval_s=0.375)
    hypothesis = words(" the reader")
    assert [update(hypothesis) for _ in range(3)] == [[], [], []]  # the first reading is 0.75 s old
    assert [w.text for w in update(hypothesis)] == [" the", " reader"]  # 1.125 s: all four agree


def test_a_span_no_longer_than_the_interval_changes_nothing() -> None:
    script = [" If the", " If the reader", " if the leader will.", " If the leader will excuse", " If the"]
    plain, spanned = Updates(LocalAgreement()), Updates(LocalAgreement(span_s=0.75))
    for text in script:
        assert plain(words(text)) == spanned(words(text))


def unsure(hypothesis: list[Word], *texts: str) -> list[Word]:
    return [replace(w, probability=0.2) if w.text in texts else w for w in hypothesis]


def test_an_unsure_word_waits_until_readings_over_the_hold_span_agree() -> None:
    agreement = LocalAgreement(hypotheses=2, unsure_below=0.5, unsure_hold_s=2.0)
    update = Updates(agreement)  # hypotheses at 0.75, 1.5, 2.25, … s
    hypothesis = unsure(words(" Mister Ines said so"), " Ines")
    update(hypothesis)
    # Two hypotheses agree on every word; " Ines" is unsure, so it and what follows wait.
    assert [w.text for w in update(hypothesis)] == [" Mister"]
    assert update(hypothesis) == []  # readings at 0.75 … 2.25 s: 1.5 s, short of the 2 s hold
    # The reading at 0.75 s is 2.25 s old now: every reading since agrees.
    assert [w.text for w in update(hypothesis)] == [" Ines", " said", " so"]


def test_an_unsure_word_is_confirmed_like_any_other_once_the_model_is_sure() -> None:
    agreement = LocalAgreement(hypotheses=2, unsure_below=0.5, unsure_hold_s=2.0)
    update = Updates(agreement)
    update(unsure(words(" Mister Ines said"), " Ines"))
    assert [w.text for w in update(words(" Mister Ines said so"))] == [" Mister"]  # unsure in the previous one
    assert [w.text for w in update(words(" Mister Ines said so."))] == [" Ines", " said", " so."]


def test_an_unsure_word_that_changes_waits_for_a_new_hold_span() -> None:
    agreement = LocalAgreement(hypotheses=2, unsure_below=0.5, unsure_hold_s=1.5)
    update = Updates(agreement)
    update(unsure(words(" Missus Ines"), " Missus"))
    assert update(unsure(words(" Missus Ines said"), " Missus")) == []
    assert update(unsure(words(" Miss Eens said"), " Miss")) == []  # the third reading differs
    assert update(unsure(words(" Miss Eens said"), " Miss")) == []  # " Miss" read for 0.75 s only
    assert [w.text for w in agreement.partial] == [" Miss", " Eens", " said"]
    assert [w.text for w in update(unsure(words(" Miss Eens said"), " Miss"))] == [" Miss", " Eens", " said"]


def test_silence_restarts_the_hold_span() -> None:
    agreement = LocalAgreement(hypotheses=2, unsure_below=0.5, unsure_hold_s=1.5)
    update = Updates(agreement)
    hypothesis = unsure(words(" Ines"), " Ines")
    update(hypothesis)
    update(hypothesis)
    agreement.forget_partial()  # the audio was dropped as silence
    update(hypothesis)
    assert update(hypothesis) == []
    assert [w.text for w in update(hypothesis)] == [" Ines"]


def test_disagreement_confirms_nothing_past_the_first_difference() -> None:
    agreement = LocalAgreement()
    update = Updates(agreement)
    update(words(" the reader will"))
    assert [w.text for w in update(words(" the leader will"))] == [" the"]
    assert [w.text for w in agreement.partial] == [" leader", " will"]


def test_words_dropped_from_a_hypothesis_are_not_confirmed_twice() -> None:
    agreement = LocalAgreement()
    update = Updates(agreement)
    update(words(" a b c d"))
    update(words(" a b c d"))  # all four confirmed
    assert update(words(" a b c")) == []  # the model lost "d" this time
    update(words(" a b c d e"))
    confirmed = update(words(" a b c d e f"))
    assert [w.text for w in confirmed] == [" e"]


def test_a_repetition_loop_cannot_pass_for_confirmed_words() -> None:
    """Seen on validation audio: tiny.en looped a phrase; matching the confirmed words deep in
    the loop marked the loop as confirmed audio, and the words after it were never confirmed."""
    said = " that he makes any court to me and I know no young woman"
    agreement = LocalAgreement()
    update = Updates(agreement)
    update(words(said))
    update(words(said))
    loop = words(" and I know that he is a human." * 6)
    assert skip_confirmed(agreement.in_buffer, loop) <= len(agreement.in_buffer) + REWORDING_SLACK
    update(loop)
    update(words(said + " in the country"))
    confirmed = update(words(said + " in the country that he does"))
    assert [w.text for w in confirmed] == [" in", " the", " country"]


def test_a_reworded_prefix_is_skipped_by_its_letters_not_by_a_common_word() -> None:
    """Seen on validation audio: aligning word by word matched the confirmed "the" to the "the"
    of "thee the truth", so the new words before it were taken for confirmed ones and lost."""
    confirmed = words(" by Allah reply the fireman")
    hypothesis = words(" By Allah replied, firemen, I tell thee the truth.")
    assert skip_confirmed(confirmed, hypothesis) == 4
    assert skip_confirmed(words(" But she said, whom so ever"), words(" But she said, Whomsoever thou ceased")) == 4
    assert skip_confirmed(words(" But she said, Whomsoever"), words(" But she said, whom so ever thou ceased")) == 6


def test_alignment_falls_back_to_time_when_no_word_matches() -> None:
    confirmed = words(" today", 0.0, 1.0)
    hypothesis = [*words(" to day", 0.0, 1.0), *words(" we", 1.0, 1.3)]
    assert skip_confirmed(confirmed, hypothesis) == 2


def test_cut_moves_confirmed_words_out_of_the_buffer() -> None:
    agreement = LocalAgreement()
    update = Updates(agreement)
    update(words(" one two three"))
    update(words(" one two three four"))
    assert [w.text for w in agreement.cut(2)] == [" one", " two"]
    assert [w.text for w in agreement.in_buffer] == [" three"]
