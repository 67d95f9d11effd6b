"""Access rules for pages, shared by every app's views."""

from django.contrib.auth.mixins import PermissionRequiredMixin


class RoleRequiredMixin(PermissionRequiredMixin):
    """Anonymous users go to the login page; signed-in users without the permission get 403."""

    def handle_no_permission(self):
        self.raise_exception = self.request.user.is_authenticated
        return super().handle_no_permission()
