"""What the CMS hooks that speak HTTP share (WordPress, Drupal, Drupal 7, Joomla): their transport's
errors are CMS errors. Backdrop's bee runs over SSH and has its own hook."""

from __future__ import annotations

from cms_operators.backend import CmsConfigError, CmsError, CmsUnavailable
from transport.hook import RestHook


class CmsRestHook(RestHook):
    """RestHook whose connection problems are CmsConfigError and whose transient failures CmsUnavailable."""

    def connection_error(self, message: str) -> CmsError:
        return CmsConfigError(None, "connection_invalid", message)

    def unavailable(self, message: str, *, code: str) -> CmsError:
        return CmsUnavailable(None, code, message)
