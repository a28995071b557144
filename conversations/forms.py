from django import forms
from django.conf import settings

from conversations.models import ChatModel, Conversation, usable_model
from conversations.services.images import CheckedImage, ImageRefused, image_check


class ModelField(forms.CharField):
    """A catalog model by its id, among those the form's user may pick (conversations.models.usable_model)."""

    user = None  # set by the form

    def clean(self, value) -> ChatModel | None:
        model_id = super().clean(value)
        if not model_id:
            return None
        model = usable_model(model_id, user=self.user)
        if model is None:
            raise forms.ValidationError("That model is not available. Pick one from the list.")
        return model


def clean_system_prompt(prompt: str) -> str:
    limit = settings.SYSTEM_PROMPT_MAX_CHARS
    if len(prompt) > limit:
        raise forms.ValidationError(f"The system prompt can be at most {limit:,} characters.")
    return prompt


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class ImagesField(forms.FileField):
    """Any number of files under one name (the composer's "Attach image"), each checked by image_check."""

    def __init__(self, **kwargs):
        super().__init__(widget=MultipleFileInput(), **kwargs)

    def clean(self, data, initial=None) -> list[CheckedImage]:
        uploads = [upload for upload in data or [] if upload]
        limit = settings.CHAT_IMAGES_PER_MESSAGE
        if len(uploads) > limit:
            raise forms.ValidationError(f"A message can have at most {limit} images; this one has {len(uploads)}.")
        images, errors = [], []
        for upload in uploads:
            try:
                images.append(image_check(upload))  # an empty file too: it is no image
            except ImageRefused as refused:
                errors.append(str(refused))
        if errors:
            raise forms.ValidationError(errors)
        return images


class MessageForm(forms.Form):
    text = forms.CharField(strip=False, required=False, widget=forms.Textarea)
    model = ModelField(required=False)
    images = ImagesField(required=False)
    # Only read when the message starts a new chat.
    system_prompt = forms.CharField(required=False, widget=forms.Textarea)

    def __init__(self, *args, user, **kwargs):
        """`user`: whose models may be picked."""
        super().__init__(*args, **kwargs)
        self.fields["model"].user = user

    def clean_system_prompt(self) -> str:
        return clean_system_prompt(self.cleaned_data["system_prompt"])

    def clean_text(self) -> str:
        text = self.cleaned_data["text"]
        if not text.strip():
            raise forms.ValidationError("Type a message first.")
        limit = settings.MESSAGE_MAX_CHARS
        if len(text) > limit:
            raise forms.ValidationError(f"Messages can be at most {limit:,} characters; this one has {len(text):,}.")
        return text


class SystemPromptForm(forms.ModelForm):
    class Meta:
        model = Conversation
        fields = ["system_prompt"]
        labels = {"system_prompt": "System prompt"}
        help_texts = {"system_prompt": "Sent before every message in this chat."}
        widgets = {"system_prompt": forms.Textarea(attrs={"rows": 4})}

    def clean_system_prompt(self) -> str:
        return clean_system_prompt(self.cleaned_data["system_prompt"])


class RenameForm(forms.ModelForm):
    class Meta:
        model = Conversation
        fields = ["title"]

    def clean_title(self) -> str:
        title = " ".join(self.cleaned_data["title"].split())
        if not title:
            raise forms.ValidationError("A chat needs a name.")
        return title
