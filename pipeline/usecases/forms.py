"""Issue a one-stop form with this process's keys and settings: the stored copy and the citizen's copy.

Storing the stored copy with the dossier (under :func:`pipeline.domain.forms.form_object_key`) and
keeping the lookup secret's hash belong to the dossier lifecycle; this only signs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.domain.forms import AnyForm, FormCopy, FormKind, form_object_key, load_forms, sign_form
from pipeline.usecases.services import Services
from signing.levels import Level

__all__ = ["IssuedForm", "issue_form"]


@dataclass
class IssuedForm:
    kind: FormKind
    object_key: str  # where the stored copy belongs
    stored: bytes = field(repr=False)  # the agency's copy: no lookup secret anywhere in it
    citizen: bytes | None = field(default=None, repr=False)  # the applicant's copy, with the secret; never stored


def issue_form(form: AnyForm, services: Services, *, n: int = 1) -> IssuedForm:
    """Sign ``form``'s stored copy and, when it has one and a lookup secret is set, the citizen's copy.

    The desk officer signs as ``HOSO_OFFICER_NAME`` unless the form names its signer (the leader of
    Mẫu 04–05 is named by the form, else by the role's title); the level is
    ``HOSO_LEVEL_DIGITISED``, timestamped by ``HOSO_TSA_URL``. ``n`` numbers repeated forms of one kind.
    """
    s = services.settings
    spec = load_forms().forms[form.kind]
    if form.signer_name is None and spec.signer == "officer":
        form = form.model_copy(update={"signer_name": s.officer_name})

    def sign(copy: FormCopy) -> bytes:
        return sign_form(
            form,
            services.keys,
            public_url=s.public_url,
            copy=copy,
            timestamp_url=s.tsa_url,
            level=Level(s.level_digitised),
            trust_roots=services.trust_roots,
        )

    citizen = sign("citizen") if "citizen" in spec.copies and form.lookup_secret is not None else None
    return IssuedForm(form.kind, form_object_key(form.dossier_code, form.kind, n), sign("stored"), citizen)
