"""Projects and who works in them: roles, the strength scale and its margins, how a project pairs
responses and admits new policies."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator, URLValidator
from django.db import models
from django.db.models import Q


class Role(models.TextChoices):
    LABELER = "labeler", "Labeler"
    LEAD = "lead", "Project lead"
    ADMIN = "admin", "Admin"


#: Each role can do what the roles before it can.
ROLE_RANK = {Role.LABELER: 1, Role.LEAD: 2, Role.ADMIN: 3}


class Strength(models.TextChoices):
    """The four-level scale of Llama 2 and Llama 3, strongest first."""

    SIGNIFICANTLY_BETTER = "significantly_better", "Significantly better"
    BETTER = "better", "Better"
    SLIGHTLY_BETTER = "slightly_better", "Slightly better"
    NEGLIGIBLY_BETTER = "negligibly_better", "Negligibly better / unsure"


#: How filters, rows and metrics name the strength of a pair whose source gave none (stored as
#: null: an imported HH-RLHF pair says which answer won, not by how much).
UNKNOWN_STRENGTH = "unknown"
#: The strengths a filter may name: the scale, then "unknown".
STRENGTH_FILTER_VALUES = [*Strength.values, UNKNOWN_STRENGTH]


class MarginTable(models.TextChoices):
    SMALL = "small", "Llama 2 small (1, 2/3, 1/3, 0)"
    LARGE = "large", "Llama 2 large (3, 2, 1, 0)"


#: Margin per strength (Llama 2, Table 27). "small" had the best average RM accuracy (Table 28).
MARGINS = {
    MarginTable.SMALL: {
        Strength.SIGNIFICANTLY_BETTER: 1.0,
        Strength.BETTER: 2.0 / 3.0,
        Strength.SLIGHTLY_BETTER: 1.0 / 3.0,
        Strength.NEGLIGIBLY_BETTER: 0.0,
    },
    MarginTable.LARGE: {
        Strength.SIGNIFICANTLY_BETTER: 3.0,
        Strength.BETTER: 2.0,
        Strength.SLIGHTLY_BETTER: 1.0,
        Strength.NEGLIGIBLY_BETTER: 0.0,
    },
}


class Pairing(models.TextChoices):
    COMMITTEE = "committee", "Two members by weight (Llama 3)"
    REJECTION_SAMPLING = "rejection_sampling", "Best of K by the reward model vs. another sample"


class SelectionRule(models.TextChoices):
    """Which of a sampling pass's candidate pairs go to humans (modeling/ml/selection.py)."""

    RANDOM = "random", "Random"
    UNCERTAINTY = "uncertainty", "Uncertainty: the reward model's win probability closest to 1/2"
    D_OPTIMAL = "d-optimal", "D-optimal on the reward model's last-layer embeddings"


class MemberPairRule(models.TextChoices):
    """Which two committee members answer a prompt."""

    WEIGHTS = "weights", "By the members' weights (Llama 3)"
    ACTIVE = "active", "Shrink the widest leaderboard intervals first (Chatbot Arena)"


class PromptSource(models.TextChoices):
    """Where a project's prompts come from (SPEC: live dialogues, Llama 2 / HH-RLHF protocol)."""

    IMPORTED = "imported", "Imported prompts"
    WRITTEN = "written", "Written by labelers (live dialogues)"
    BOTH = "both", "Both: imported, and live dialogues for a share of the work"


#: A live dialogue has at most this many turns, whatever a project sets.
MAX_DIALOGUE_TURNS = 20


#: A study's exit addresses: https only (a participant's browser leaves for them).
HTTPS_ONLY = URLValidator(schemes=["https"], message="An https:// address.", code="https_only")
#: Completion and screen-out codes: printable ASCII without spaces, as platforms issue them.
STUDY_CODE = RegexValidator(r"^[!-~]+\Z", "Printable characters only (letters, digits, punctuation), no spaces.")


class PolicyAdmission(models.TextChoices):
    ALWAYS = "always", "Always join the committee"
    IF_WINS = "if_wins", "Join only if the reward model prefers it to the previous policy"
    IF_HUMANS_PREFER = "if_humans_prefer", "Join once labelers prefer it to the previous policy"


class Project(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True)
    guidelines = models.TextField(blank=True, help_text="Markdown, shown to labelers one key away.")

    # Labeling settings.
    overlap_k = models.PositiveSmallIntegerField(default=3, help_text="Labels wanted per comparison.")
    gold_rate = models.FloatField(default=0.05, help_text="Share of leases that are gold comparisons.")
    lease_minutes = models.PositiveIntegerField(default=30)
    max_live_leases = models.PositiveSmallIntegerField(default=3, help_text="Live leases one labeler may hold.")
    margin_table = models.CharField(max_length=10, choices=MarginTable.choices, default=MarginTable.SMALL)
    ask_attributes = models.BooleanField(default=False, help_text="Ask HelpSteer2 ratings (0-4) per response.")
    ask_flags = models.BooleanField(default=True)
    ask_rationale = models.BooleanField(default=False)
    edit_step = models.BooleanField(default=True, help_text="Ask labelers to edit the winner.")
    max_edit_chars = models.PositiveIntegerField(default=20000)
    ask_safety = models.BooleanField(
        default=False, help_text="Ask whether each response is safe (Llama 2's safety meta-label: both, only the chosen, only the rejected, neither)."
    )
    verdict_change_minutes = models.PositiveIntegerField(
        default=10, help_text="How long after a submit its labeler may change the verdict (0: never)."
    )
    # Swapped repeats (annotation/services/labeling/queue.py): a share of leases serves the labeler
    # one of their own earlier comparisons again, sides swapped and unmarked, to measure how often
    # their winner flips. A repeat never becomes a label (RepeatJudgment, not Judgment).
    repeat_rate = models.FloatField(
        default=0.03, help_text="Share of leases that serve the labeler one of their own earlier comparisons again, sides swapped (0-0.5)."
    )
    repeat_min_gap = models.PositiveIntegerField(
        default=20, help_text="A comparison comes back only after at least this many of the labeler's later judgments in the project."
    )

    # Where prompts come from: imported, or written by labelers in live dialogues.
    prompt_source = models.CharField(max_length=10, choices=PromptSource.choices, default=PromptSource.IMPORTED)
    written_share = models.FloatField(
        default=0.25, help_text="With both sources: the share of a labeler's tasks offered as live dialogues (0-1)."
    )
    dialogue_max_turns = models.PositiveSmallIntegerField(default=4, help_text="Turns a live dialogue may have.")
    allow_system_prompt = models.BooleanField(default=False, help_text="Labelers may set a system prompt for their dialogue.")
    prompt_categories = models.JSONField(
        default=list, blank=True, help_text="Categories a labeler may give a written prompt (a list of names)."
    )
    live_share = models.BooleanField(
        "send live pairs to others", default=False,
        help_text="Live comparisons also go to k - 1 further labelers through the normal queue.",
    )

    # Committee and rounds.
    pairing = models.CharField(max_length=24, choices=Pairing.choices, default=Pairing.COMMITTEE)
    rejection_k = models.PositiveSmallIntegerField(default=4, help_text="Samples per prompt for rejection sampling.")
    # Spending human labels where they teach the most (modeling/services/sampling.py over
    # modeling/ml/selection.py): K answers per prompt, then the rule picks which pairs humans see.
    candidates_k = models.PositiveSmallIntegerField(
        "answers per prompt", default=2,
        help_text="Answers a sampling pass draws per prompt (2-8); with more than 2, the selection rule picks which pairs labelers see.",
    )
    selection_rule = models.CharField(max_length=12, choices=SelectionRule.choices, default=SelectionRule.RANDOM)
    selection_random_share = models.FloatField(
        default=0.2, help_text="Share of every batch's pairs drawn uniformly at random whatever the rule (0-1)."
    )
    selection_prompt_cap = models.PositiveSmallIntegerField(
        "pairs per prompt at most", default=2, help_text="So the chosen pairs stay spread over prompts."
    )
    member_pair_rule = models.CharField(max_length=8, choices=MemberPairRule.choices, default=MemberPairRule.WEIGHTS)

    # The LLM judge's pre-screen (modeling/services/judging.py): a committee member gives a verdict
    # on each new comparison in both orders; labels never come from it alone.
    judge = models.ForeignKey(
        "modeling.CommitteeMember", null=True, blank=True, on_delete=models.SET_NULL, related_name="judged_projects",
        help_text="A committee member that pre-screens each new comparison (both orders).",
    )
    suggestions_shown = models.BooleanField(
        "show the judge's suggestion", default=False, help_text="Labelers see the judge's consistent verdict as a hint."
    )
    suggestion_blind_share = models.FloatField(
        default=0.1, help_text="Share of labels never shown a suggestion, to measure what showing them changes (0-1)."
    )
    ambiguous_first = models.BooleanField(
        "ambiguous pairs first", default=False, help_text="Pairs the judge answered differently in the two orders are served first."
    )
    policy_admission = models.CharField(max_length=20, choices=PolicyAdmission.choices, default=PolicyAdmission.ALWAYS)
    admission_min_labels = models.PositiveIntegerField(
        "labels before labelers decide", default=30, help_text="Labels on a round's evaluation pairs before labelers' verdict admits or retires its policy."
    )
    evaluation_trains = models.BooleanField(
        "evaluation labels train", default=False,
        help_text="Labels on evaluation pairs (a round's new policy against the previous one) also train the next rounds.",
    )
    round_min_new_judgments = models.PositiveIntegerField(
        default=200, help_text="A scheduled round starts once this many judgments arrived since the last one."
    )
    round_schedule_enabled = models.BooleanField(default=False)
    labeler_quality_threshold = models.FloatField(
        default=0.6, help_text="Gold accuracy below which a labeler can be excluded from exports."
    )

    # Crowd hand-off (Prolific or any platform): participants enter through /p/<slug>/join/
    # (annotation/services/participants.py) and leave through these URLs.
    study_open = models.BooleanField(
        "open a study link", default=False,
        help_text="External participants (Prolific, or any platform passing external_id) may join through /p/<slug>/join/ and label here.",
    )
    study_items = models.PositiveIntegerField(
        "items per participant", default=20, help_text="Judgments a participant submits before being sent to the completion URL.",
    )
    study_completion_url = models.URLField(
        "completion URL", max_length=500, blank=True, validators=[HTTPS_ONLY],
        help_text="Where a participant who finished is sent; {code} is replaced by the completion code, "
                  "e.g. https://app.prolific.com/submissions/complete?cc={code}",
    )
    study_completion_code = models.CharField("completion code", max_length=64, blank=True, validators=[STUDY_CODE])
    study_screenout_url = models.URLField(
        "screen-out URL", max_length=500, blank=True, validators=[HTTPS_ONLY],
        help_text="Where a participant under the minimum gold accuracy is sent; {code} as above.",
    )
    study_screenout_code = models.CharField("screen-out code", max_length=64, blank=True, validators=[STUDY_CODE])
    study_min_gold_accuracy = models.FloatField(
        "minimum gold accuracy", default=0.0,
        help_text="A participant whose gold accuracy falls under this is screened out (0: nobody is).",
    )
    study_gold_after = models.PositiveSmallIntegerField(
        "gold items before judging", default=3, help_text="Gold judgments a participant gives before their accuracy is judged.",
    )

    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(overlap_k__gte=1), name="project_overlap_k_positive"),
            models.CheckConstraint(condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="project_gold_rate_unit"),
            models.CheckConstraint(condition=Q(lease_minutes__gte=1), name="project_lease_positive"),
            models.CheckConstraint(condition=Q(repeat_rate__gte=0) & Q(repeat_rate__lte=0.5), name="project_repeat_rate_range"),
            models.CheckConstraint(condition=Q(repeat_min_gap__gte=1), name="project_repeat_min_gap_positive"),
            models.CheckConstraint(condition=Q(max_live_leases__gte=1), name="project_live_leases_positive"),
            models.CheckConstraint(condition=Q(candidates_k__gte=2) & Q(candidates_k__lte=8), name="project_candidates_k_range"),
            models.CheckConstraint(condition=Q(selection_rule__in=SelectionRule.values), name="project_selection_rule_valid"),
            models.CheckConstraint(
                condition=Q(selection_random_share__gte=0) & Q(selection_random_share__lte=1), name="project_selection_random_share_unit"
            ),
            models.CheckConstraint(condition=Q(selection_prompt_cap__gte=1), name="project_selection_prompt_cap_positive"),
            models.CheckConstraint(condition=Q(member_pair_rule__in=MemberPairRule.values), name="project_member_pair_rule_valid"),
            models.CheckConstraint(
                condition=Q(suggestion_blind_share__gte=0) & Q(suggestion_blind_share__lte=1), name="project_suggestion_blind_share_unit"
            ),
            models.CheckConstraint(condition=Q(prompt_source__in=PromptSource.values), name="project_prompt_source_valid"),
            models.CheckConstraint(condition=Q(written_share__gte=0) & Q(written_share__lte=1), name="project_written_share_unit"),
            models.CheckConstraint(
                condition=Q(dialogue_max_turns__gte=1) & Q(dialogue_max_turns__lte=MAX_DIALOGUE_TURNS),
                name="project_dialogue_turns_range",
            ),
            models.CheckConstraint(condition=Q(study_items__gte=1), name="project_study_items_positive"),
            models.CheckConstraint(condition=Q(study_gold_after__gte=1), name="project_study_gold_after_positive"),
            models.CheckConstraint(
                condition=Q(study_min_gold_accuracy__gte=0) & Q(study_min_gold_accuracy__lte=1), name="project_study_min_gold_unit",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def takes_written(self) -> bool:
        """Whether labelers may write live dialogues here."""
        return self.prompt_source in (PromptSource.WRITTEN, PromptSource.BOTH)

    def margin_for(self, strength: str | None) -> float:
        """The Bradley-Terry margin of a strength; 0 for a pair whose source gave none."""
        return 0.0 if strength is None else MARGINS[MarginTable(self.margin_table)][Strength(strength)]


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.LABELER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user_per_project"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} as {self.role} in {self.project}"
