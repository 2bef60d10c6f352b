"""Live dialogues: a labeler writes a turn, two members answer on the live worker's code path,
the judged turn becomes an ordinary prompt / responses / comparison / judgment, and the dialogue
goes on with the edited (or chosen) answer. Bad requests get a clear 4xx and store nothing."""

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from annotation.models import (
    Assignment,
    AssignmentState,
    Comparison,
    ComparisonSource,
    Dialogue,
    DialogueState,
    Judgment,
    PromptSource,
    Prompt,
    Response,
    Role,
)
from annotation.services import comparison_lease_next
from modeling.ml.generation import Stream
from modeling.models import JobState, LiveSide, LiveTurn, LiveWorker
from modeling.services import live
from modeling.services.live import dialogue_start, live_turn_execute, turn_start, turn_view
from modeling.services.watchdog import JOB_MODELS
from tests.factories import MemberFactory, ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def written(member_of, tiny_model_dir):
    project = ProjectFactory(prompt_source=PromptSource.WRITTEN, gold_rate=0, overlap_k=2, dialogue_max_turns=3)
    members = [
        MemberFactory(name=f"tiny-{i}", model_path=str(tiny_model_dir), generation={"temperature": 1.0, "max_new_tokens": 12})
        for i in range(2)
    ]
    labeler = member_of(project, Role.LABELER)
    client = APIClient()
    client.force_authenticate(labeler)
    return project, members, labeler, client


def _answer(turn_id: int, **kwargs) -> LiveTurn:
    return live_turn_execute(turn_id=turn_id, **kwargs)


def _submit(client, view, **verdict):
    body = {"chosen": "left", "strength": "better", "edit": None, **verdict}
    return client.post(f"/api/v1/assignments/{view['task']['assignment']}/submit/", body, format="json")


def test_a_live_turn_is_answered_by_two_members_and_stored_as_ordinary_rows(written, django_capture_on_commit_callbacks):
    project, members, labeler, client = written
    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "Name a colour."}, format="json")
    assert response.status_code == 201, response.json()
    view = response.json()
    assert view["status"] == "waiting" and view["task"] is None and len(sent) == 1  # the task goes after commit
    assert view["conversation"] == [{"role": "user", "content": "Name a colour."}]
    assert not Prompt.objects.filter(project=project).exists()  # nothing stored until both answers are in

    turn = _answer(view["turn"])
    assert turn.state == JobState.SUCCEEDED and turn.side_a == turn.side_b == LiveSide.DONE
    prompt = Prompt.objects.get(project=project)
    assert prompt.dialogue_id == view["dialogue"] and prompt.turn_index == 0
    assert prompt.messages == [{"role": "user", "content": "Name a colour."}]
    comparison = Comparison.objects.get(prompt=prompt)
    assert comparison.source == ComparisonSource.LIVE and comparison.slots_taken == 1 and comparison.rendered
    responses = {r.member_id: r for r in Response.objects.filter(prompt=prompt)}
    assert set(responses) == {turn.member_a_id, turn.member_b_id}
    assert responses[turn.member_a_id].text == turn.text_a and responses[turn.member_a_id].engine == "hf"
    assert responses[turn.member_a_id].timings["tokens_per_s"] is not None
    assignment = Assignment.objects.get(comparison=comparison)
    assert assignment.labeler == labeler and assignment.state == AssignmentState.LEASED
    assert assignment.left_response_id == responses[turn.member_a_id if turn.left_is_a else turn.member_b_id].pk

    polled = client.get(f"/api/v1/live-turns/{turn.pk}/").json()
    assert polled["status"] == "answered" and polled["task"]["assignment"] == assignment.pk
    assert polled["left"]["text"] == (turn.text_a if turn.left_is_a else turn.text_b)
    assert "tiny-" not in str(polled)  # blind: no member names


def test_the_dialogue_goes_on_with_the_edited_answer_and_marks_it(written):
    project, members, labeler, client = written
    first = client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "Say hi."}, format="json").json()
    view = turn_view(turn=_answer(first["turn"]))
    # Before the verdict the next turn is refused: the context is not known yet.
    early = client.post(f"/api/v1/dialogues/{first['dialogue']}/turns/", {"text": "And then?"}, format="json")
    assert early.status_code == 409 and "Judge the current turn" in early.json()["detail"]
    assert _submit(client, view, edit="Hello, edited by a human.").status_code == 201

    second = client.post(f"/api/v1/dialogues/{first['dialogue']}/turns/", {"text": "And then?"}, format="json")
    assert second.status_code == 201, second.json()
    assert second.json()["conversation"] == [
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Hello, edited by a human.", "mark": "edited"},
        {"role": "user", "content": "And then?"},
    ]
    _answer(second.json()["turn"])
    prompt = Prompt.objects.get(dialogue_id=first["dialogue"], turn_index=1)
    assert prompt.messages[1] == {"role": "assistant", "content": "Hello, edited by a human."}
    assert prompt.metadata["assistant_marks"] == {"1": "edited"}
    rendered = Comparison.objects.get(prompt=prompt).rendered["conversation"]
    assert rendered[1]["mark"] == "edited" and "mark" not in rendered[0]

    # Without an edit the chosen answer carries the dialogue on.
    second_turn = LiveTurn.objects.get(dialogue_id=first["dialogue"], turn_index=1, state=JobState.SUCCEEDED)
    assert _submit(client, turn_view(turn=second_turn)).status_code == 201
    context, marks = live.dialogue_context(dialogue=Dialogue.objects.get(pk=first["dialogue"]))
    chosen = Judgment.objects.get(comparison__prompt=prompt).chosen_response.text
    assert context[-1] == {"role": "assistant", "content": chosen} and marks == {"1": "edited", "3": "chosen"}

    # The project's turn limit (3): a third turn is fine, a fourth is refused with a clear 400.
    third = client.post(f"/api/v1/dialogues/{first['dialogue']}/turns/", {"text": "Last one."}, format="json").json()
    assert _submit(client, turn_view(turn=_answer(third["turn"]))).status_code == 201
    fourth = client.post(f"/api/v1/dialogues/{first['dialogue']}/turns/", {"text": "One more?"}, format="json")
    assert fourth.status_code == 400 and "3 turns" in fourth.json()["detail"]
    assert Prompt.objects.filter(dialogue_id=first["dialogue"]).count() == 3


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"text": ""}, 400, "write something"),
        ({"text": "   "}, 400, "write something"),
        ({"text": "x" * (live.MAX_TURN_CHARS + 1)}, 400, "at most"),
        ({"text": "a\x00b"}, 400, "text"),
        ({"text": "hi", "system_prompt": "Be terse."}, 400, "system prompt"),
        ({"text": "hi", "category": "nonsense"}, 400, "categories"),
        ({"text": 5}, 400, "text"),
        ({"text": "hi", "surprise": 1}, 400, "surprise"),
    ],
)
def test_a_bad_first_turn_gets_a_clear_400_and_stores_nothing(written, body, status, needle):
    project, _, _, client = written
    response = client.post(f"/api/v1/projects/{project.slug}/dialogue/", body, format="json")
    assert response.status_code == status
    assert needle.lower() in str(response.json()).lower()
    assert not Dialogue.objects.exists() and not LiveTurn.objects.exists()


def test_dialogues_are_refused_where_they_do_not_belong(written, member_of):
    project, _, labeler, client = written
    imported = ProjectFactory(prompt_source=PromptSource.IMPORTED)
    member_of(imported, Role.LABELER)
    from annotation.models import Membership

    Membership.objects.create(project=imported, user=labeler, role=Role.LABELER)
    refused = client.post(f"/api/v1/projects/{imported.slug}/dialogue/", {"text": "hi"}, format="json")
    assert refused.status_code == 400 and "imported prompts only" in refused.json()["detail"]

    mine = client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "hi"}, format="json").json()
    other = APIClient()
    other.force_authenticate(member_of(project, Role.LABELER))
    # Another labeler's dialogue and turn are not theirs to see, write to, redraw or end.
    assert other.get(f"/api/v1/live-turns/{mine['turn']}/").status_code == 404
    assert other.post(f"/api/v1/dialogues/{mine['dialogue']}/turns/", {"text": "x"}, format="json").status_code == 404
    assert other.post(f"/api/v1/live-turns/{mine['turn']}/redraw/", {}, format="json").status_code == 404
    assert other.post(f"/api/v1/dialogues/{mine['dialogue']}/end/", {}, format="json").status_code == 404
    # A second turn while the first is being answered is refused.
    busy = client.post(f"/api/v1/dialogues/{mine['dialogue']}/turns/", {"text": "again"}, format="json")
    assert busy.status_code == 409 and "still answering" in busy.json()["detail"]
    assert LiveTurn.objects.count() == 1 and Dialogue.objects.get().state == DialogueState.OPEN
    # An outsider does not learn the project exists.
    outsider = APIClient()
    from tests.factories import UserFactory

    outsider.force_authenticate(UserFactory())
    assert outsider.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "hi"}, format="json").status_code == 404


def test_one_member_alone_cannot_answer_a_live_turn(written):
    project, members, labeler, client = written
    members[1].is_active = False
    members[1].save()
    response = client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "hi"}, format="json")
    assert response.status_code == 409 and "two active committee members" in response.json()["detail"]
    assert not Dialogue.objects.exists()


def test_a_failing_side_stores_nothing_says_which_side_and_a_redraw_finishes(written):
    project, members, labeler, client = written
    broken = MemberFactory(name="broken", model_path="/nowhere/model")
    members[1].is_active = False
    members[1].save()
    view = client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "hi"}, format="json").json()
    turn = _answer(view["turn"])
    assert turn.state == JobState.FAILED
    failed_key = "a" if turn.member_a_id == broken.pk else "b"
    assert getattr(turn, f"side_{failed_key}") == LiveSide.FAILED and "model directory missing" in getattr(turn, f"error_{failed_key}")
    polled = client.get(f"/api/v1/live-turns/{turn.pk}/").json()
    failed_side = "left" if (failed_key == "a") == turn.left_is_a else "right"
    assert polled["status"] == "failed" and polled[failed_side]["failed"] and failed_side in polled["message"]
    assert "nowhere" not in str(polled)  # the member's error (its path) stays on the row, for leads
    assert not Prompt.objects.exists() and not Comparison.objects.exists()

    broken.is_active = False
    broken.save()
    members[1].is_active = True
    members[1].save()
    redrawn = client.post(f"/api/v1/live-turns/{turn.pk}/redraw/", {}, format="json")
    assert redrawn.status_code == 201
    assert client.post(f"/api/v1/live-turns/{turn.pk}/redraw/", {}, format="json").status_code == 409  # once
    again = _answer(redrawn.json()["turn"])
    assert again.state == JobState.SUCCEEDED and Prompt.objects.get().turn_index == 0
    assert client.post(f"/api/v1/live-turns/{again.pk}/redraw/", {}, format="json").status_code == 409  # answered: judge it


def test_live_pairs_stay_with_their_author_unless_the_project_shares_them(written, member_of):
    project, _, labeler, client = written
    view = client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "hi"}, format="json").json()
    _answer(view["turn"])
    other = member_of(project, Role.LABELER)
    assert comparison_lease_next(project=project, labeler=other) is None
    # The author's live lease is the live page's: the queue neither serves it nor counts it.
    assert comparison_lease_next(project=project, labeler=labeler) is None
    project.live_share = True
    project.save()
    shared = comparison_lease_next(project=project, labeler=other)
    assert shared is not None and shared.comparison.source == ComparisonSource.LIVE


def test_ending_a_dialogue_drops_answers_in_flight_and_gives_the_lease_back(written):
    project, _, labeler, client = written
    view = client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "hi"}, format="json").json()
    _answer(view["turn"])
    comparison = Comparison.objects.get()
    ended = client.post(f"/api/v1/dialogues/{view['dialogue']}/end/", {}, format="json")
    assert ended.status_code == 200 and ended.json()["state"] == "ended"
    assignment = Assignment.objects.get(comparison=comparison)
    assert assignment.state == AssignmentState.SKIPPED
    comparison.refresh_from_db()
    assert comparison.slots_taken == 0
    assert client.post(f"/api/v1/dialogues/{view['dialogue']}/turns/", {"text": "more"}, format="json").status_code == 409

    # A new dialogue while one is open ends the old one, whose queued turn is dropped unanswered.
    first = client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "one"}, format="json").json()
    client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "two"}, format="json")
    old = LiveTurn.objects.get(pk=first["turn"])
    assert old.cancelled and old.state == JobState.FAILED
    assert _answer(old.pk).state == JobState.FAILED and not Prompt.objects.filter(dialogue_id=first["dialogue"]).exists()


def test_the_page_knows_at_once_when_the_live_worker_is_down_or_stopped(written):
    project, _, labeler, client = written
    view = client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "hi"}, format="json").json()
    assert view["worker_up"] is False and "not running" in view["message"]
    LiveWorker.objects.create(hostname="live@test", beat_at=timezone.now(), started_at=timezone.now())
    polled = client.get(f"/api/v1/live-turns/{view['turn']}/").json()
    assert polled["worker_up"] is True and polled["status"] == "waiting"
    # A running turn whose row stopped moving lost its worker: the page offers a redraw.
    LiveTurn.objects.filter(pk=view["turn"]).update(
        state=JobState.RUNNING, heartbeat_at=timezone.now() - timedelta(seconds=live.TURN_STALE_S + 1)
    )
    polled = client.get(f"/api/v1/live-turns/{view['turn']}/").json()
    assert polled["status"] == "stalled" and "Redraw" in polled["message"]
    assert LiveTurn in JOB_MODELS  # and the watchdog fails it for good, or re-sends a lost message


class _SlowBackend:
    """Streams forever, a word at a time, and cancels its own turn after a few words (as a redraw
    from the page would), so the worker must notice at its next flush."""

    engine = "hf"

    def __init__(self, turn_id):
        self.turn_id = turn_id

    def stream(self, messages, params):
        import time

        def deltas():
            for i in range(10_000):
                if i == 3:
                    LiveTurn.objects.filter(pk=self.turn_id).update(cancelled=True)
                time.sleep(0.02)
                yield f"word{i} "
            return 0, 0, "length"

        return Stream(deltas(), engine=self.engine)


@pytest.mark.django_db(transaction=True)
def test_a_redraw_stops_the_worker_mid_answer_and_nothing_is_stored(written):
    project, _, labeler, client = written
    view = client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "hi"}, format="json").json()
    turn = _answer(view["turn"], backend_loader=lambda member: _SlowBackend(view["turn"]))
    assert turn.state == JobState.FAILED and turn.error == "cancelled"
    assert turn.text_a.startswith("word0")  # it streamed into the row before it stopped
    assert not Prompt.objects.exists() and not Comparison.objects.exists()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(["text", "system_prompt", "category", "other"]), _json | st.text(), max_size=4))
def test_any_body_for_a_new_dialogue_is_answered_with_a_clear_status_never_a_500(written, body):
    project, _, _, client = written
    before = (Dialogue.objects.count(), LiveTurn.objects.count())
    response = client.post(f"/api/v1/projects/{project.slug}/dialogue/", body, format="json")
    assert response.status_code in (201, 400), (body, response.status_code)
    if response.status_code == 400:
        assert (Dialogue.objects.count(), LiveTurn.objects.count()) == before  # refused: nothing written
    else:
        assert isinstance(body.get("text"), str) and body["text"].strip()


def test_two_members_of_one_gguf_answer_as_two_sequences_of_one_llamacpp_context(written):
    """The demo's committee (SmolLM2 at two temperatures): one batched decode serves both sides."""
    pytest.importorskip("llama_cpp")
    import importlib.util
    from pathlib import Path

    from modeling.ml.generation import LlamaCppBackend
    from modeling.services.members import SMOLLM2_GGUF, SMOLLM2_PACKAGE, member_register_smollm2

    project, members, labeler, client = written
    for member in members:
        member.is_active = False
        member.save()
    smol = member_register_smollm2()
    for member in smol:
        member.generation = {**member.generation, "max_new_tokens": 16}
        member.save()
    backend = LlamaCppBackend(Path(importlib.util.find_spec(SMOLLM2_PACKAGE).submodule_search_locations[0]) / SMOLLM2_GGUF)
    calls = {"batch": 0, "stream": 0}
    batch, stream = backend.stream_batch, backend.stream
    backend.stream_batch = lambda *a, **k: (calls.__setitem__("batch", calls["batch"] + 1), batch(*a, **k))[1]
    backend.stream = lambda *a, **k: (calls.__setitem__("stream", calls["stream"] + 1), stream(*a, **k))[1]
    view = client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "Name three fruits."}, format="json").json()
    turn = _answer(view["turn"], backend_loader=lambda member: backend)
    assert turn.state == JobState.SUCCEEDED, turn.error
    assert calls == {"batch": 1, "stream": 0}
    responses = Response.objects.filter(prompt__dialogue_id=view["dialogue"])
    assert {r.engine for r in responses} == {"llama.cpp"} and all(0 < r.completion_tokens <= 16 for r in responses)
    assert {r.member_id for r in responses} == {m.pk for m in smol}


def test_a_turn_whose_lease_ran_out_unjudged_ends_its_dialogue_when_the_page_comes_back(written):
    """The labeler closed the tab: the answered turn's lease expires and blocks nothing; coming
    back, the page starts a new dialogue instead of one that cannot go on."""
    from annotation.services import assignments_expire

    project, _, labeler, client = written
    view = client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "hi"}, format="json").json()
    _answer(view["turn"])
    assert client.get(f"/api/v1/projects/{project.slug}/dialogue/").status_code == 200  # resumable while leased
    Assignment.objects.update(expires_at=timezone.now() - timedelta(seconds=1), leased_at=timezone.now() - timedelta(minutes=31))
    assert assignments_expire() == 1
    assert client.get(f"/api/v1/projects/{project.slug}/dialogue/").status_code == 204
    assert Dialogue.objects.get(pk=view["dialogue"]).state == DialogueState.ENDED
    assert client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "again"}, format="json").status_code == 201


def test_an_openai_compatible_member_streams_its_side_from_its_endpoint(written):
    from modeling.models import MemberKind
    from tests.modeling.chat_server import ChatServer

    project, members, labeler, client = written
    with ChatServer() as server:
        members[1].kind, members[1].model_path = MemberKind.ENDPOINT, ""
        members[1].base_url, members[1].endpoint_model = server.url, "served"
        members[1].save()
        view = client.post(f"/api/v1/projects/{project.slug}/dialogue/", {"text": "Say hi."}, format="json").json()
        turn = _answer(view["turn"])
    assert turn.state == JobState.SUCCEEDED, turn.error
    assert server.requests[-1]["body"]["stream"] is True
    endpoint = Response.objects.get(member=members[1])
    assert endpoint.engine == "openai" and endpoint.text.startswith("echo (1 messages): Say hi.")
