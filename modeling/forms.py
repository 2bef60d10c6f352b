"""Forms of the committee page (staff). They parse and validate, the model's own rules included
(a local member needs a location, an endpoint a URL and a model, weight > 0, key variable names);
modeling/services/members.py writes."""

from __future__ import annotations

from django import forms

from modeling.models import DEFAULT_GENERATION, CommitteeMember, Engine, MemberKind

#: Kinds a person adds here; checkpoints are registered by the rounds that train them.
ADDABLE_KINDS = [(MemberKind.LOCAL.value, "Local model (a directory on the gpu worker, or a GGUF file in it)"),
                 (MemberKind.ENDPOINT.value, "OpenAI-compatible endpoint (vLLM, TGI, llama.cpp server, a hosted API)")]


class GenerationFields(forms.Form):
    """A member's sampling settings, as three fields; ``generation()`` is the JSON the member keeps."""

    temperature = forms.FloatField(min_value=0, max_value=5, initial=DEFAULT_GENERATION["temperature"])
    top_p = forms.FloatField(min_value=0.01, max_value=1, initial=DEFAULT_GENERATION["top_p"], label="Top p")
    max_new_tokens = forms.IntegerField(min_value=1, max_value=4096, initial=DEFAULT_GENERATION["max_new_tokens"],
                                        label="Max new tokens")

    def generation(self) -> dict:
        return {name: self.cleaned_data[name] for name in ("temperature", "top_p", "max_new_tokens")}


class MemberAddForm(GenerationFields, forms.ModelForm):
    kind = forms.ChoiceField(choices=ADDABLE_KINDS, widget=forms.RadioSelect, initial=MemberKind.LOCAL.value)
    engine = forms.ChoiceField(
        choices=Engine.choices, initial=Engine.AUTO.value, required=False,
        help_text="llama.cpp runs a GGUF file from its quantized weights (fast on CPU); transformers runs anything local "
                  "(a GGUF file is dequantized once); vLLM serves a model directory on a GPU worker. Auto picks llama.cpp for GGUF on CPU, "
                  "vLLM for a directory on a GPU worker that has it, else transformers, and says why when it falls back.",
    )

    def clean_engine(self):
        return self.cleaned_data.get("engine") or Engine.AUTO

    class Meta:
        model = CommitteeMember
        fields = ["name", "kind", "description", "weight", "model_path", "gguf_file", "engine", "base_url", "endpoint_model",
                  "api_key_env", "timeout_s"]
        labels = {"model_path": "Model directory", "gguf_file": "GGUF file in it", "base_url": "Base URL",
                  "endpoint_model": "Model name at the endpoint", "api_key_env": "API key variable", "timeout_s": "Timeout (s)"}
        help_texts = {
            "model_path": "On the gpu worker's disk: a model folder (transformers), or the folder that holds a GGUF file.",
            "gguf_file": "Optional: a .gguf file inside that folder.",
            "base_url": "e.g. http://vllm:8000/v1",
            "api_key_env": "The name of an environment variable on the workers that holds the key; the key itself never enters Arbiter.",
            "weight": "Relative chance of being drawn for a pair.",
        }
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    def clean(self):
        data = super().clean()
        # Fields of the other kind are dropped, so a half-filled endpoint block cannot ride along
        # with a local member (and the other way round).
        # The model's CHECK constraints say the same; here each gap is named at its field.
        if data.get("kind") == MemberKind.LOCAL:
            for name in ("base_url", "endpoint_model", "api_key_env"):
                data[name] = ""
            if not data.get("model_path"):
                self.add_error("model_path", "A local member needs its model directory.")
            if data.get("engine") == Engine.LLAMA_CPP and not data.get("gguf_file"):
                self.add_error("engine", "llama.cpp reads GGUF files: name the .gguf file, or choose transformers or auto.")
            if data.get("engine") == Engine.VLLM and data.get("gguf_file"):
                self.add_error("engine", "vLLM serves model directories here, not GGUF files: choose llama.cpp, transformers or auto.")
        elif data.get("kind") == MemberKind.ENDPOINT:
            for name in ("model_path", "gguf_file"):
                data[name] = ""
            data["engine"] = Engine.AUTO
            for name in ("base_url", "endpoint_model"):
                if not data.get(name) and name not in self.errors:
                    self.add_error(name, "An endpoint member needs its base URL and the model name it serves.")
        return data


class MemberSettingsForm(GenerationFields):
    """A row's form: the weight and sampling settings of one member."""

    weight = forms.FloatField(min_value=0.001, max_value=1000)
