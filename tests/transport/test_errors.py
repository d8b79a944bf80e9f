"""One error base for CiviCRM and CMS errors; every error survives pickling (passed between processes)."""

import pickle

import pytest

from civicrm_hooks.hook import CiviCRMAuthError, CiviCRMError, CiviCRMUnavailable
from cms_operators.backend import CmsDuplicateEmail, CmsError, CmsMailFailed, CmsRejected, CmsUnavailable
from transport.errors import ProvisioningError

ERRORS = [
    CiviCRMError("Unknown field", status=400, entity="Contact", action="get"),
    CiviCRMAuthError("refused", status=401, entity="Contact", action="get"),
    CiviCRMUnavailable("HTTP 503", status=503, entity="UFMatch", action="save", retryable=True),
    CmsUnavailable(429, "rate_limited", "slow down", retry_after=12.5),
    CmsDuplicateEmail(500, "existing_user_email", "email exists"),
    CmsRejected(400, "rest_invalid_param", "bad email"),
    CmsMailFailed(200, "not_confirmed", "no mail"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_keep_their_class_text_and_fields_through_pickle(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and isinstance(copy, ProvisioningError)
    assert str(copy) == str(error)
    assert (copy.message, copy.status, copy.code, copy.retry_after, copy.retryable) == (
        error.message, error.status, error.code, error.retry_after, error.retryable)


def test_transient_errors_are_retryable_and_others_are_not():
    assert CmsUnavailable(503, None, "x").retryable and CiviCRMUnavailable("x").retryable
    assert not CmsRejected(400, None, "x").retryable and not CiviCRMError("x").retryable
    assert CiviCRMError("Sorry an error occurred", status=500, retryable=True).retryable  # the hook's choice


def test_both_sides_share_the_base():
    assert issubclass(CiviCRMError, ProvisioningError) and issubclass(CmsError, ProvisioningError)
