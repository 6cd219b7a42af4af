from rest_framework.routers import DefaultRouter

from uploads.views import UploadViewSet

router = DefaultRouter()
router.include_root_view = False
router.register("uploads", UploadViewSet, basename="upload")
urlpatterns = router.urls
