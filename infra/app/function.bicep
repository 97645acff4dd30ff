// The Flex Consumption plan and the Linux Python function app. Every connection is identity-based
// through the user-assigned identity: the host's storage (AzureWebJobsStorage__*), the catalog's
// tables and queue (the same account, so CATALOG_STORAGE is not set), the deployment container
// and Application Insights.

param name string
param planName string
param location string
param tags object

@description('azd service name from azure.yaml; azd finds the app to deploy to by this tag.')
param serviceName string

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity, for AzureWebJobsStorage__clientId and Application Insights.')
param identityClientId string

param blobServiceUri string
param queueServiceUri string
param tableServiceUri string
param deploymentContainerName string
param applicationInsightsName string

@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

@description('Spread the plan\'s instances over availability zones.')
param zoneRedundant bool = false

param catalogTable string
param catalogWalTable string
param catalogQueue string
param catalogIndexKeys string
param catalogRowKey string
param catalogCaseSensitive bool
param catalogSweepSchedule string
param catalogApplyConcurrency string
param catalogSettleSeconds string

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy is the zoneRedundant parameter, off by default because it needs a region with availability zones for Flex Consumption and zone-redundant storage; the default must deploy in every Flex region.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: The catalog's HTTP API is meant to be called from outside Azure; it is protected by function and admin keys (README, HTTP API) and HTTPS only.
  // checkov:skip=CKV_AZURE_17: Clients authenticate with function keys; requiring client certificates (mTLS) would lock out every documented client.
  // checkov:skip=CKV_AZURE_212: numberOfWorkers is a dedicated-plan setting; Flex Consumption scales instances per function up to maximumInstanceCount and replaces failed ones itself.
  // checkov:skip=CKV_AZURE_213: healthCheckPath is the App Service/Premium instance-eviction probe, not part of Flex Consumption hosting; liveness is served at GET /api/health for external probes.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        // Host storage, identity-based (no key): the Functions host and the catalog both read these.
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: blobServiceUri
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: queueServiceUri
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: tableServiceUri
        }
        // Telemetry with Entra ID: local auth is disabled on the Application Insights resource.
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: applicationInsights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
        // The catalog (docs/architecture.md §11). Set even where the code has a default: the host resolves
        // %CATALOG_QUEUE% and %CATALOG_SWEEP_SCHEDULE% only from settings that exist.
        {
          name: 'CATALOG_TABLE'
          value: catalogTable
        }
        {
          name: 'CATALOG_WAL_TABLE'
          value: catalogWalTable
        }
        {
          name: 'CATALOG_QUEUE'
          value: catalogQueue
        }
        {
          name: 'CATALOG_INDEX_KEYS'
          value: catalogIndexKeys
        }
        {
          name: 'CATALOG_ROW_KEY'
          value: catalogRowKey
        }
        {
          name: 'CATALOG_CASE_SENSITIVE'
          value: catalogCaseSensitive ? 'true' : 'false'
        }
        {
          name: 'CATALOG_SWEEP_SCHEDULE'
          value: catalogSweepSchedule
        }
        {
          name: 'CATALOG_APPLY_CONCURRENCY'
          value: catalogApplyConcurrency
        }
        {
          name: 'CATALOG_SETTLE_SECONDS'
          value: catalogSettleSeconds
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobServiceUri}/${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Deployments go through Entra ID (azd, func publish with an Azure CLI login); no publishing
// passwords for FTP or the SCM site.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
